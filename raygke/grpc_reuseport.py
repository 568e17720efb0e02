"""Local Ray nodes only: replicas' gRPC servers bind without SO_REUSEPORT.

Ray Serve 2.60 asks for `("grpc.so_reuseport", "0")`, a string, which gRPC ignores (it reads the
option as an integer), so every replica's gRPC ingress binds with SO_REUSEPORT. Serve's controller
hands out direct-ingress ports per node, lowest first; in the cluster each node has an address of
its own, but the local run's nodes share 127.0.0.1, so two ingress replicas on different local
nodes get the same port and share it: the kernel splits calls between them and one app answers for
another (NOT_FOUND, measured). With the option as an integer the second bind fails and Serve picks
the next port, as it already does for HTTP. raygke/node_site/sitecustomize.py applies this in every
local node's processes when Ray imports its gRPC module.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any


def reuseport_off(grpc_util: ModuleType) -> None:
    server = grpc_util.gRPCGenericServer
    original = server.__init__

    def __init__(self: Any, *args: Any, extra_options: Any = None, **kwargs: Any) -> None:
        fixed = [(k, int(v) if k == "grpc.so_reuseport" else v) for k, v in extra_options or []]
        original(self, *args, extra_options=fixed, **kwargs)

    server.__init__ = __init__
