"""The Kubernetes source: every pod's stdout and stderr, from the kubelet's CRI log files.

    enable    kubernetes_source: whether it runs here ([kubernetes] enabled), on which socket
    source    KubernetesSource: a reader per container instance's log, beside the engines
    watch     PodLogWatcher: one inotify thread over /var/log/pods, each N.log opened at once
    paths     PodLog: what a pod log's path says (namespace, pod, UID, container, restart)
    metadata  PodMetadata: a log's fields, from the path and from CRI, cached from first sight
    cri       CriClient: the runtime's CRI socket (runtime.v1 over gRPC)
    cri_api   the CRI messages used (cri_api.proto; cri_api_pb2 is generated and checked in)

What it adds to the log-file tailer is only what is Kubernetes' own: the path list, the CRI
format (logfiles/formats/k8sfile.py, shared with Podman) and the kubelet's rotation
(logfiles/rotation/kubelet.py). Reading is logfiles' FileReader.
"""
