"""The log-file source: an engine's own log files, read on the host.

    layout      where an engine keeps each container's log, and in which format (pure)
    watch       LogFileWatcher, one inotify thread per engine that opens each log file the
                moment it appears
    handover    the watcher's contract (OpenedLog, LogFileEvents, the opener's side), and
                Handover: each log file handed over once, in creation order (Container)
    opener      Opener: a process of its own, at a raised priority, that opens each new log
                file the moment it appears and passes the descriptor on (SCM_RIGHTS)
    realtime    the opener's real-time policy, and the Budget that keeps it a small share
    safe_open   opening files in a directory containers write to (regular files only, no
                symlink, no FIFO), bounded config reads, closing a descriptor handed over
    source      LogFileSource: keeps what the watcher opened until a reader claims it, and
                gives each claimed container its file set
    readloop    ReadLoop, the one thread per engine that runs every container's reader, woken
                by writes through its own one-shot inotify watches
    reader      FileReader, the reader of one container, as steps the read loop runs: file
                set -> parser -> cursor filter -> joiner -> queue
    rotation/   the engine-agnostic tailer: a container's log as a sequence of files, whether
                rotation renames the file away (NumberedFiles) or a new one over it
                (ReplacedFiles); file identity; the start-position search
    formats/    one parser per line format (json-file, local, k8s-file) and the picker

Descriptors flow one way: watch (handover) -> source -> rotation (a file set), whose owner
closes them.
`layout` and `formats` are pure; only `watch` and `readloop` run threads (a reader without a
loop runs on a thread of its own).
"""
