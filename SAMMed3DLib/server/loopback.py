"""A single machine's server stays off the network: every port of its private Ray listens on 127.0.0.1.

Only the HTTP API listens on ``--host``. A private local Ray needs no port on the network, but Ray takes the
machine's address as its node address (its GCS, raylet, object manager, agents and workers then listen on every
interface), and each Serve replica opens its inter-deployment gRPC server on every interface whatever the node
address. A server that joins a cluster (``--address``) keeps Ray's own choices: its nodes must reach each other.
"""

import ipaddress
import os
from typing import Any

LOOPBACK_RAY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
"""Ray's switch (named for the platforms where it is the default) that makes a local Ray take 127.0.0.1 as its
node address."""
_EVERY_INTERFACE = ("[::]", "0.0.0.0", "")


def keep_ray_on_loopback() -> None:
    """Make the local Ray about to start (from this process) use 127.0.0.1 as its node address."""
    from ray._private import ray_constants

    os.environ[LOOPBACK_RAY] = "0"  # for Ray's processes, which read it when they start
    ray_constants.ENABLE_RAY_CLUSTER = False  # this process read it when it imported ray


def keep_replica_on_loopback() -> None:
    """In a Serve replica (its constructor, before Serve opens the replica's gRPC server) of a Ray whose node
    address is loopback: open that server on 127.0.0.1, not on every interface."""
    import ray
    from ray.serve._private import replica

    if not ipaddress.ip_address(ray.util.get_node_ip_address()).is_loopback:
        return
    opens = replica.add_port_to_grpc_server

    def on_loopback(server: Any, address: str) -> int:
        host, _, port = address.rpartition(":")
        return opens(server, f"127.0.0.1:{port}" if host in _EVERY_INTERFACE else address)

    replica.add_port_to_grpc_server = on_loopback
