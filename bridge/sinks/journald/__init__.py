"""The journald sink: the writer thread, the datagram socket, and the journal read-back.

    writer          JournalWriter: takes batches off the queue, runs each container's
                    transforms, sends, then commits positions (only after journald has them)
    native          journald's native protocol: a record -> a datagram (pure)
    inner           inner-journal entries -> datagrams, and what is committed for them (pure)
    socket          JournalSocket: the AF_UNIX datagram socket, in batches
    sendmmsg        sendmmsg(2) through ctypes: many datagrams per system call
    readback        where each container's streams got to, read back from the journal
    inner_readback  the same for inner journals
"""
