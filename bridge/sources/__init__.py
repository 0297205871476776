"""Where lines come from: one `Engine` per configured engine, each reading its containers.

    engine          Engine: connects (with backoff), builds its EngineContext, starts discovery
    context         EngineContext: what one engine's parts share, passed as one value
    engine_api      the Engine API client, engine kind, error classes, ContainerStatus
    discovery       Supervisor: the container list and the events stream -> readers
    containers      ContainerTable: the containers known, what an event does to one
    handles         HandleFactory: where a container's reading starts, what its lines wear
    select          SourceSelector: log file or API stream, per container
    reader          ReaderThread: what every log reader shares (thread, joiner, queueing)
    filters         which containers are forwarded
    event_metadata  what the events said of a container, for one already removed
    keyed           a few threads for many containers, in order per container
    api/            the API source: ApiReader and the stream's decoders
    logfiles/       the log-file source: the engine's own files, read on the host
    inner_journal/  the inner-journal source: a container's own journal (systemd inside)
    kubernetes/     the kubelet's pod logs (/var/log/pods) on the log-file tailer, CRI metadata

No source imports a sink: everything leaves through core's PendingQueue.
"""
