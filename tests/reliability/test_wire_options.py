"""The connection-limit options: on the command line, from the environment, and checked at start."""

from __future__ import annotations

from pathlib import Path

import pytest
from hyperframe.frame import SettingsFrame

from blazerpc_core.errors import RegistrationError
from blazerpc_core.server.wire.limits import WireLimits
from blazerpc_core.settings import ServeSettings
from blazerpc_core.testing import run_cli, serve_cli
from tests.reliability.wire_client import RawH2

APP = str(Path(__file__).resolve().parents[2] / "examples" / "app.py")
OPTIONS = {
    "--max-connections": "BLAZERPC_MAX_CONNECTIONS",
    "--handshake-timeout": "BLAZERPC_HANDSHAKE_TIMEOUT",
    "--idle-timeout": "BLAZERPC_IDLE_TIMEOUT",
    "--first-message-timeout": "BLAZERPC_FIRST_MESSAGE_TIMEOUT",
    "--max-inflight-mb": "BLAZERPC_MAX_INFLIGHT_MB",
    "--max-concurrent-streams": "BLAZERPC_MAX_CONCURRENT_STREAMS",
    "--max-resets-per-second": "BLAZERPC_MAX_RESETS_PER_SECOND",
    "--compression": "BLAZERPC_COMPRESSION",
}


def test_every_limit_is_an_option_with_an_environment_variable() -> None:
    text = " ".join(run_cli("serve", "--help").stdout.split())
    for option, env in OPTIONS.items():
        assert option in text and env in text, option


def test_limits_from_the_environment_reach_the_wire() -> None:
    env = {"BLAZERPC_MAX_CONCURRENT_STREAMS": "7", "BLAZERPC_IDLE_TIMEOUT": "0.5"}
    with serve_cli(APP, env=env) as server, RawH2(server.address) as client:
        assert client.server_settings[SettingsFrame.MAX_CONCURRENT_STREAMS] == 7
        assert client.wait_closed(5) < 2.5  # idle


def test_defaults() -> None:
    limits = WireLimits.from_settings(ServeSettings())
    assert (limits.handshake_timeout, limits.idle_timeout, limits.first_message_timeout) == (10.0, 300.0, 30.0)
    assert (limits.max_inflight_bytes, limits.max_concurrent_streams, limits.compression) == (
        256 * 1024 * 1024, 100, "identity",
    )
    assert 16 <= limits.max_connections <= 10_000
    assert limits.connection_window == 16 * limits.stream_window


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        (ServeSettings(max_message_mb=512), "--max-inflight-mb"),
        (ServeSettings(compression="br"), "--compression"),
        (ServeSettings(idle_timeout=-1), "--idle-timeout"),
    ],
)
def test_a_bad_combination_is_refused_naming_the_option(settings: ServeSettings, named: str) -> None:
    with pytest.raises(RegistrationError, match=named):
        WireLimits.from_settings(settings)
