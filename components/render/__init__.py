"""Pure planning code: functions that compute specs, manifests and configuration files.

Nothing here imports `pulumi`, so the local run, the CLI and property tests use it without the engine.
"""
