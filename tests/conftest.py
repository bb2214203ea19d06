"""Shared fixtures; the blazerpc pytest plugin (blazerpc_serve, blazerpc_stubs) is enabled in pyproject.

CI runs this suite on two pytest-xdist processes (``PARALLEL`` in noxfile.py), so a test
takes its ports from the kernel (``free_port``) and writes only under ``tmp_path``.
"""
