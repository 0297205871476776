#!/bin/sh
# Regenerates bridge/sources/kubernetes/cri_api_pb2.py and .pyi from cri_api.proto.
# The generated code is checked in: the bridge's install needs neither protoc nor grpcio-tools
# (offline wheels, deploy/install.sh), and a change to it is a reviewable diff. Its protobuf
# runtime check needs protobuf >= the generator's version (pyproject pins that floor).
# Needs grpcio-tools: pip install grpcio-tools (dev only).
set -eu
cd "$(dirname "$0")/../bridge/sources/kubernetes"
python3 -m grpc_tools.protoc -I. --python_out=. --pyi_out=. cri_api.proto
