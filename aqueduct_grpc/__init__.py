"""aqueduct-grpc: the gRPC core of the image-generation gateway."""
