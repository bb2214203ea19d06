"""The batcher's parts on their own, with explicit clocks: queue order, aging, deadlines,
priority parsing, the adaptive cost fit, knob validation, and stopping."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from blazerpc_core import BlazeApp, InvalidArgument, RegistrationError, Unavailable
from blazerpc_core.build import assemble
from blazerpc_core.call import CallContext
from blazerpc_core.runtime.adaptive import Adaptive, ArrivalRate, CostModel
from blazerpc_core.runtime.dispatch import BatchConfig
from blazerpc_core.runtime.events import BatchEvents
from blazerpc_core.runtime.executor import Invoker, make_pool
from blazerpc_core.runtime.queue import Pending, RequestQueue, read_priority
from blazerpc_core.settings import BatchSettings, ServeSettings


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def item(loop, name: str, *, rows: int = 1, priority: int = 0, at: float = 0.0, deadline=None, key=None):
    return Pending([name], rows, loop.create_future(), priority=priority, enqueued=at, deadline=deadline, key=key)


def names(batch) -> list[str]:
    return [p.args[0] for p in batch]


def test_fifo_within_a_level_and_highest_priority_first(loop):
    queue = RequestQueue(aging=0)
    for name, priority in [("a", 0), ("b", 5), ("c", 0), ("d", 5), ("e", -3)]:
        queue.push(item(loop, name, priority=priority))
    batch, expired = queue.take(10, now=1.0)
    assert names(batch) == ["b", "d", "a", "c", "e"] and expired == []
    assert queue.count == 0 and queue.rows == 0


def test_aging_bounds_how_long_a_low_priority_request_is_overtaken(loop):
    queue = RequestQueue(aging=0.1)  # one level per 100 ms of waiting
    queue.push(item(loop, "old-low", priority=0, at=0.0))
    queue.push(item(loop, "new-high", priority=5, at=0.4))
    # At t=0.45 the low one has gained 4.5 levels, the high one 0.5: 5.5 beats 4.5.
    assert names(queue.take(1, now=0.45)[0]) == ["new-high"]
    queue.push(item(loop, "newer-high", priority=5, at=0.6))
    # At t=0.65 the low one has waited 6.5 levels' worth: it now goes before fresh priority-5 work.
    assert names(queue.take(1, now=0.65)[0]) == ["old-low"]


def test_batches_count_rows_and_a_large_request_goes_alone(loop):
    queue = RequestQueue(aging=0)
    for name, rows in [("a", 2), ("b", 2), ("c", 1), ("big", 9), ("d", 1)]:
        queue.push(item(loop, name, rows=rows))
    assert queue.rows == 15
    assert names(queue.take(4, now=0)[0]) == ["a", "b"]
    assert names(queue.take(4, now=0)[0]) == ["c"]  # "big" would not fit; order is kept
    assert names(queue.take(4, now=0)[0]) == ["big"]
    assert names(queue.take(4, now=0)[0]) == ["d"]


def test_expired_and_discarded_requests_are_skipped(loop):
    queue = RequestQueue(aging=0)
    gone = item(loop, "gone")
    for p in [item(loop, "late", deadline=0.5), gone, item(loop, "ok", deadline=5.0)]:
        queue.push(p)
    queue.discard(gone)
    assert (queue.count, queue.rows) == (2, 2)
    batch, expired = queue.take(10, now=1.0)
    assert names(batch) == ["ok"] and names(expired) == ["late"]
    assert queue.oldest() is None


def test_requests_whose_shapes_differ_are_not_joined(loop):
    queue = RequestQueue(aging=0)
    for name, key in [("a", (3,)), ("b", (3,)), ("c", (4,)), ("d", (3,))]:
        queue.push(item(loop, name, key=key))
    assert names(queue.take(10, now=0)[0]) == ["a", "b"]
    assert names(queue.take(10, now=0)[0]) == ["c"]
    assert names(queue.take(10, now=0)[0]) == ["d"]


@pytest.mark.parametrize(("raw", "expected"), [(None, 0), ("7", 7), (" -3 ", -3), (b"100", 100), ("-100", -100)])
def test_priority_header_values(raw, expected):
    metadata = {} if raw is None else {"x-blazerpc-priority": raw}
    assert read_priority(metadata) == expected


@pytest.mark.parametrize("raw", ["high", "1.5", "101", "-101", "", "9" * 40])
def test_invalid_priorities_are_invalid_argument(raw):
    with pytest.raises(InvalidArgument, match="x-blazerpc-priority"):
        read_priority({"x-blazerpc-priority": raw})


def test_cost_model_fits_fixed_and_per_row_cost():
    cost = CostModel(min_samples=3)
    for rows in (1, 2, 4, 8):
        cost.add(rows, 0.010 + 0.001 * rows)
    assert cost.ready
    assert cost.fixed == pytest.approx(0.010)
    assert cost.per_row == pytest.approx(0.001)
    assert cost.predict(32) == pytest.approx(0.042)
    single = CostModel(min_samples=1)
    single.add(4, 0.02)
    assert single.predict(32) == pytest.approx(0.02)  # one size seen: assume a fixed cost


def test_arrival_rate_forgets_old_bursts():
    rate = ArrivalRate(window=0.1, memory=0.5)
    for i in range(100):
        rate.add(10, now=i * 0.01)
    assert rate.get(1.0) > 500
    rate.add(1, now=20.0)
    assert rate.get(20.0) < 10


def test_knobs_are_validated_with_the_model_named():
    with pytest.raises(RegistrationError, match=r"model 'm'.*max_batch_size"):
        BatchConfig.from_settings(BatchSettings(max_batch_size=0), "'m'")
    with pytest.raises(RegistrationError, match="batch_timeout_ms"):
        BatchConfig.from_settings(BatchSettings(batch_timeout_ms=-1), "'m'")
    config = BatchConfig.from_settings(BatchSettings(max_latency_ms=20, max_concurrent_batches=3), "'m'")
    assert (config.max_latency, config.max_concurrent_batches, config.max_batch_size) == (0.02, 3, 32)


def test_an_unknown_policy_name_is_refused_when_the_server_is_built():
    app = BlazeApp()

    @app.model("double", policy="fastest")
    def double(x: list[float]) -> list[float]:
        return x

    assembly = assemble(app, load_entry_points=False)
    (spec,) = assembly.registry
    policy = assembly.hooks.batching_policy(spec, ServeSettings())
    pool = make_pool(1)
    with pytest.raises(RegistrationError, match="'fastest', which no plugin provides"):
        policy.create_runner(assembly.compiler.compile(spec), Invoker(double, is_async=False, pool=pool), BatchEvents())
    pool.shutdown()


def test_a_latency_target_selects_the_adaptive_policy():
    app = BlazeApp()

    @app.model("double", max_latency_ms=30)
    def double(x: list[float]) -> list[float]:
        return x

    assembly = assemble(app, load_entry_points=False)
    (spec,) = assembly.registry
    policy = assembly.hooks.batching_policy(spec, ServeSettings())
    assert policy.name == Adaptive.name
    policy = assembly.hooks.batching_policy(spec, ServeSettings(batching=BatchSettings(policy="size-or-timeout")))
    assert policy.name == Adaptive.name  # the model's knob beats the server's default


def test_stopping_answers_queued_requests_unavailable():
    release = threading.Event()
    app = BlazeApp()

    @app.model("hold", batch=True)
    def hold(x: list[float]) -> list[float]:
        release.wait(30)
        return x

    async def main() -> None:
        assembly = assemble(app, load_entry_points=False)
        (spec,) = assembly.registry
        pool = make_pool(2)
        policy = assembly.hooks.batching_policy(spec, ServeSettings())
        runner = policy.create_runner(assembly.compiler.compile(spec), Invoker(hold, is_async=False, pool=pool),
                                      BatchEvents())
        await runner.start()
        ctx = CallContext(model=spec, rpc="PredictHold", path="/blazerpc.InferenceService/PredictHold", metadata={},
                          peer=None, deadline=None)
        running = asyncio.ensure_future(runner.submit([[1.0]], ctx))
        while runner.running == 0:  # the first request is dispatched at once (idle model)
            await asyncio.sleep(0)
        queued = asyncio.ensure_future(runner.submit([[2.0]], ctx))
        while runner.queue.count == 0:
            await asyncio.sleep(0)
        await runner.stop()
        release.set()
        for future in (running, queued):
            with pytest.raises(Unavailable, match="'hold'"):
                await future
        with pytest.raises(Unavailable):
            await runner.submit([[3.0]], ctx)
        pool.shutdown(wait=True)

    asyncio.run(main())


def test_serve_options_become_server_batching_defaults():
    from blazerpc_core.cli import make_cli, settings_from

    command = make_cli().commands["serve"]
    ctx = command.make_context("serve", [
        "app.py", "--max-batch-size", "8", "--batch-timeout-ms", "2.5", "--max-queue-size", "100",
        "--max-concurrent-batches", "2", "--max-latency-ms", "40", "--batch-policy", "adaptive",
    ])
    options = dict(ctx.params)
    options.pop("targets")
    core = set(ServeSettings.__dataclass_fields__) | {"log_level", "dev_reload"}
    plugin_names = [name for name in options if name not in core and not name.startswith("batching_")]
    settings = settings_from(options, plugin_names)
    assert settings.batching == BatchSettings(
        max_batch_size=8, batch_timeout_ms=2.5, max_queue_size=100, max_concurrent_batches=2,
        max_latency_ms=40, policy="adaptive",
    )
    assert not settings.batching.batch  # server knobs never opt a model in


@pytest.mark.parametrize("option", ["--max-batch-size", "--max-queue-size", "--max-concurrent-batches"])
def test_serve_refuses_nonsense_batching_options(option):
    from click.testing import CliRunner

    from blazerpc_core.cli import make_cli

    result = CliRunner().invoke(make_cli(), ["serve", "app.py", option, "0"])
    assert result.exit_code == 2
    assert "0 is not in the range" in result.output
