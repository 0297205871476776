"""What sources, transforms and sinks share: engine- and journal-agnostic, importing nothing above.

record      Record: one line (or merged record) on its way to the journal
cursor      Position, Cursor, CursorFilter: exact resume positions in a container's log
container   ContainerHandle: one container's positions, fields and transforms (ChainLike)
inner       the seam for inner-journal entries: InnerStream and its protocols
queue       PendingQueue and its items (Batch, EndOfStream, InnerBatch): sources -> sink
partial     PartialJoiner: rejoins the pieces an engine cuts long lines into
fields      journal field names and a container's fields, Docker-compatible
timestamps  RFC3339Nano <-> nanoseconds
readiness   readable(): waiting on descriptors of any number (poll, not select)
state       the state file, and ResumePoints: the only writer of saved positions
"""
