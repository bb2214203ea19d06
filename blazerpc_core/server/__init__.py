"""The grpclib server: inference, health, reflection, lifecycle."""
