"""Shared fixtures; the blazerpc pytest plugin (blazerpc_serve, blazerpc_stubs) is enabled in pyproject."""
