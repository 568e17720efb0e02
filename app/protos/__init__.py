"""Protocol buffers for the apps' gRPC services, and their generated stubs (`make protos` regenerates)."""
