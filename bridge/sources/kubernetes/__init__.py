"""The Kubernetes source: every pod's stdout and stderr, from the kubelet's CRI log files.

cri       CriClient: the runtime's CRI socket (runtime.v1 over gRPC), read-only use
cri_api   the CRI messages used (cri_api.proto; cri_api_pb2 is generated and checked in)
"""
