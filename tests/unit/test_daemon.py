from __future__ import annotations

from bridge.config import Config
from bridge.daemon import docker_client


def test_docker_connection_pools_stay_small():
    # docker-py makes a pool per request URL and fills its queue to max_pool_size on creation:
    # at 4096 that was 8 ms of CPU per request, and 8 s to attach 500 containers.
    client = docker_client(Config.model_validate({"docker": {"host": "unix:///run/x.sock"}}))
    try:
        adapter = client.get_adapter(client.base_url)
        assert adapter.max_pool_size <= 16
    finally:
        client.close()
