"""The API source: a container's log through the Engine API (`GET /containers/{id}/logs`).

    reader  ApiReader: one thread per container, the HTTP body -> records -> the queue
    frames  pure, incremental decoders: HTTP chunks, multiplexed frames, a TTY's raw stream
"""
