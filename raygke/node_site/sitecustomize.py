"""Loaded by every Python process of a local Ray node (raygke.local_ray puts this folder on the
nodes' PYTHONPATH): patches Ray Serve's gRPC module when it is first imported, as
raygke/grpc_reuseport.py explains. Installing the import hook costs nothing else."""

import importlib.abc
import importlib.machinery
import sys

_TARGET = "ray.serve._private.grpc_util"


class _PatchAfterImport(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname != _TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        loader = spec.loader
        original = loader.exec_module

        def exec_module(module):
            original(module)
            from raygke.grpc_reuseport import reuseport_off

            reuseport_off(module)

        loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _PatchAfterImport())
