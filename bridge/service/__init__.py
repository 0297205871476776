"""What the process shows systemd and Prometheus.

    http    /metrics, /healthz, /readyz on a bounded server (httpio)
    httpio  a small HTTP/1.1 server whose threads, descriptors and time per client are bounded
    notify  sd_notify (READY, STATUS, RELOADING, STOPPING) and the watchdog
"""
