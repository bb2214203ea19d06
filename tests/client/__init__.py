"""Tests of blazerpc_core.client against real servers."""
