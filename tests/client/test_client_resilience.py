"""Retries, the retry budget, rate limits, several addresses, servers that warm up, drain or die."""

from __future__ import annotations

import asyncio
import signal
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from grpclib.const import Status

from blazerpc_core.client import AsyncClient, CallError, Client, RetryPolicy
from blazerpc_core.client.retry import RetryBudget
from blazerpc_core.testing import free_port, serve_cli, start_server
from tests.client.client_apps import TIMEOUT, Calls, WarmingServer, streaming_app, wait_for

REPO = Path(__file__).resolve().parents[2]


def test_a_model_that_raises_runs_exactly_once(blazerpc_serve: Any) -> None:
    calls = Calls()
    server = blazerpc_serve(streaming_app(calls))
    with Client(server.address, timeout=TIMEOUT) as client:
        with pytest.raises(CallError) as info:
            client.call("explode", x=3)
        assert info.value.status is Status.INTERNAL and "boom 3" in info.value.message
        with pytest.raises(CallError) as info:
            client.call("refuse", x=4)
        assert info.value.status is Status.INVALID_ARGUMENT and "x=4" in info.value.message
    assert calls["explode"] == 1
    assert calls["refuse"] == 1


def test_rate_limited_calls_succeed_by_waiting_as_the_server_asks(blazerpc_serve: Any) -> None:
    server = blazerpc_serve(streaming_app(), extra={"rate_limit": 5.0, "rate_burst": 1})
    with Client(server.address, timeout=TIMEOUT, retry=RetryPolicy(max_attempts=1)) as strict:
        strict.call("whoami", x=0)
        with pytest.raises(CallError) as info:
            strict.call("whoami", x=0)
        assert info.value.status is Status.RESOURCE_EXHAUSTED
        assert info.value.retry_after is not None and 0.05 < info.value.retry_after <= 0.2

    time.sleep(0.25)  # let the bucket refill
    with Client(server.address, timeout=TIMEOUT) as client:
        started = time.monotonic()
        assert [client.call("whoami", x=i) for i in range(5)] == ["server"] * 5
        elapsed = time.monotonic() - started
    # One token every 200 ms: four of the five calls waited for theirs, and not much longer.
    assert 0.7 < elapsed < 2.5

    async def burst() -> list[str]:
        async with AsyncClient(server.address, timeout=TIMEOUT) as aclient:
            return list(await asyncio.gather(*(aclient.call("whoami", x=i) for i in range(4))))

    time.sleep(0.25)
    assert asyncio.run(burst()) == ["server"] * 4


def test_retry_budget_allows_a_floor_plus_a_share_of_calls() -> None:
    now = [0.0]
    budget = RetryBudget(RetryPolicy(budget_ratio=0.2, budget_floor=3, budget_window=30), clock=lambda: now[0])
    assert [budget.try_retry() for _ in range(4)] == [True, True, True, False]  # the floor
    for _ in range(10):
        budget.call_started()  # ten calls earn two retries
    assert [budget.try_retry() for _ in range(3)] == [True, True, False]
    now[0] += 10.0  # the floor refills at 3 per 30 s
    assert [budget.try_retry() for _ in range(2)] == [True, False]
    now[0] += 1000.0  # but never banks more than the floor
    assert sum(budget.try_retry() for _ in range(10)) == 3


def test_retry_budget_caps_retries_against_a_server_that_keeps_refusing() -> None:
    warming = WarmingServer(streaming_app())
    try:
        policy = RetryPolicy(max_attempts=100, initial_backoff=0.001, max_backoff=0.002, budget_floor=2,
                             budget_ratio=0.0)
        with Client(warming.address, timeout=TIMEOUT, retry=policy) as client:
            started = time.monotonic()
            for _ in range(3):
                with pytest.raises(CallError) as info:
                    client.call("whoami", x=1)
                assert info.value.status is Status.UNAVAILABLE
            # Without the budget, each call would have made 100 attempts until its deadline.
            assert time.monotonic() - started < 2.0
    finally:
        warming.stop()


def test_a_call_to_a_warming_server_waits_until_it_serves() -> None:
    warming = WarmingServer(streaming_app())
    try:
        with Client(warming.address, timeout=TIMEOUT, retry=RetryPolicy(max_attempts=1)) as strict:
            with pytest.raises(CallError) as info:
                strict.call("whoami", x=1)
            assert info.value.status is Status.UNAVAILABLE
            assert strict.health() == "NOT_SERVING"
        threading.Timer(0.3, warming.warmup.release.set).start()
        with Client(warming.address, timeout=TIMEOUT) as client:
            assert client.call("whoami", x=1) == "server"
    finally:
        warming.stop()


def test_not_serving_address_is_skipped_until_it_recovers() -> None:
    good_calls, warm_calls = Calls(), Calls()
    good = start_server(streaming_app(good_calls, tag="good"))
    warming = WarmingServer(streaming_app(warm_calls, tag="warming"))
    try:
        with Client([warming.address, good.address], timeout=TIMEOUT) as client:
            started = time.monotonic()
            assert [client.call("whoami", x=i) for i in range(20)] == ["good"] * 20
            assert time.monotonic() - started < 2.0
            assert good_calls["whoami"] == 20
            warming.finish_warmup()
            # Its health watch reports SERVING: calls reach it again.
            wait_for(lambda: client.call("whoami", x=0) == "warming", "the recovered server to get calls")
    finally:
        warming.stop()
        good.stop(grace_period=2)


def test_a_restarted_server_is_called_again_on_a_new_connection() -> None:
    port = free_port()
    first = start_server(streaming_app(tag="first"), port=port)
    with Client(f"127.0.0.1:{port}", timeout=TIMEOUT) as client:
        assert client.call("whoami", x=1) == "first"
        first.stop(grace_period=2)
        second = start_server(streaming_app(tag="second"), port=port)
        try:
            assert client.call("whoami", x=1) == "second"
        finally:
            second.stop(grace_period=2)


def test_unreachable_address_is_skipped(blazerpc_serve: Any) -> None:
    server = blazerpc_serve(streaming_app(tag="up"))
    dead = f"127.0.0.1:{free_port()}"
    with Client([dead, server.address], timeout=TIMEOUT, balance="round_robin") as client:
        started = time.monotonic()
        assert [client.call("whoami", x=i) for i in range(20)] == ["up"] * 20
        assert time.monotonic() - started < 3.0


def test_one_of_two_servers_stopped_mid_run_loses_no_call() -> None:
    calls_a, calls_b = Calls(), Calls()
    a = start_server(streaming_app(calls_a, tag="a"))
    b = start_server(streaming_app(calls_b, tag="b"))
    stopper = threading.Timer(0.5, a.stop, kwargs={"grace_period": 5})
    try:
        async def worker(client: AsyncClient, until: float) -> list[str]:
            answers = []
            while time.monotonic() < until:
                answers.append(await client.call("sleepy", seconds=0.01))
            return answers

        async def main() -> list[str]:
            async with AsyncClient([a.address, b.address], timeout=TIMEOUT) as client:
                until = time.monotonic() + 1.5
                stopper.start()
                batches = await asyncio.gather(*(worker(client, until) for _ in range(6)))
            return [answer for batch in batches for answer in batch]

        answers = asyncio.run(main())  # any failed call would raise here
        assert answers.count("a") > 0 and answers.count("b") > 0
        assert answers[-6:].count("a") == 0  # the stopped server got nothing at the end
    finally:
        stopper.join()
        a.stop()
        b.stop(grace_period=2)


def test_calls_on_a_connection_that_dies_are_retried_elsewhere(tmp_path: Path) -> None:
    app_file = tmp_path / "doomed.py"
    app_file.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        from tests.client.client_apps import streaming_app
        app = streaming_app(tag="doomed")
    """))
    survivor = start_server(streaming_app(tag="survivor"))
    try:
        with serve_cli(str(app_file)) as doomed:
            async def main() -> list[str]:
                async with AsyncClient([doomed.address, survivor.address], timeout=TIMEOUT) as client:
                    await client.schema()
                    calls = [asyncio.ensure_future(client.call("sleepy", seconds=1.0)) for _ in range(4)]
                    await asyncio.sleep(0.3)  # two of them are running on the doomed server
                    doomed.process.send_signal(signal.SIGKILL)
                    return list(await asyncio.gather(*calls))

            assert asyncio.run(main()) == ["survivor"] * 4
    finally:
        survivor.stop(grace_period=2)


def test_a_draining_server_finishes_calls_in_flight_while_new_ones_go_elsewhere() -> None:
    a = start_server(streaming_app(tag="a"))
    b = start_server(streaming_app(tag="b"))
    try:
        with Client(a.address, timeout=TIMEOUT) as only_a, Client([a.address, b.address], timeout=TIMEOUT) as both:
            both.models()
            in_flight: list[str] = []
            slow = threading.Thread(target=lambda: in_flight.append(only_a.call("sleepy", seconds=1.0)))
            slow.start()
            time.sleep(0.3)
            stopper = threading.Thread(target=a.stop, kwargs={"grace_period": 5})
            stopper.start()
            time.sleep(0.1)  # a now reports NOT_SERVING and refuses new calls
            assert [both.call("whoami", x=i) for i in range(6)] == ["b"] * 6
            slow.join(TIMEOUT)
            stopper.join(TIMEOUT)
            assert in_flight == ["a"]
    finally:
        a.stop()
        b.stop(grace_period=2)


def test_closing_a_client_as_its_server_goes_away_always_returns() -> None:
    """A health watch could swallow the cancellation of ``close()``: grpclib re-raises a
    connection loss in its place when both arrive together, and the watch retried forever
    (``close()`` hung once in CI, just as a stopped server's connection went). Tried: 15
    clients of two servers, each closed while one of its servers is killed at the same time."""
    b = start_server(streaming_app(tag="b"))
    try:
        for _ in range(15):
            a = start_server(streaming_app(tag="a"))
            client = Client([a.address, b.address], timeout=TIMEOUT)
            client.models()
            killer = threading.Thread(target=a.stop, kwargs={"grace_period": 0})
            closer = threading.Thread(target=client.close)
            killer.start()
            closer.start()
            closer.join(TIMEOUT)
            killer.join(TIMEOUT)
            assert not closer.is_alive(), "Client.close() did not return"
    finally:
        b.stop(grace_period=2)
