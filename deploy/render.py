"""Render the shipped proxy configs for a given listener and set of replicas.

The tests and ``benchmarks/bench_proxies.py`` run Envoy and nginx with these renderings of
``deploy/envoy/envoy.yaml`` and ``deploy/nginx/blazerpc.conf``, so what they prove is
about the shipped files: only the placeholders below change, everything else is used as
shipped.

* Envoy: the listener's address and port, the admin address and port, and the cluster's
  endpoints (the shipped ``blazerpc:50051`` becomes one endpoint per replica).
  ``retries=False`` also drops the route's retry policy (to show the drain alone loses
  no call).
* nginx: the ``listen`` port and the upstream's ``server`` line (one line per replica,
  with the shipped parameters).

From a shell (PyYAML needed for Envoy)::

    python deploy/render.py envoy --listen 0.0.0.0:8080 --replica 10.0.0.5:50051 --replica 10.0.0.6:50051
    python deploy/render.py nginx --listen 8080 --replica 10.0.0.5:50051 --replica 10.0.0.6:50051
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DEPLOY = Path(__file__).resolve().parent
ENVOY_CONFIG = DEPLOY / "envoy" / "envoy.yaml"
NGINX_CONFIG = DEPLOY / "nginx" / "blazerpc.conf"

Address = tuple[str, int]


def parse_address(text: str) -> Address:
    """``host:port`` (``[v6]:port`` too) as a pair."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"{text!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def _socket_address(address: Address) -> dict[str, Any]:
    return {"socket_address": {"address": address[0], "port_value": address[1]}}


def envoy_config(
    *, listen: Address, admin: Address, replicas: Sequence[Address], retries: bool = True, text: str | None = None
) -> dict[str, Any]:
    """The shipped Envoy config with its placeholders filled in (a dict, ready for YAML or JSON)."""
    import yaml

    config: dict[str, Any] = yaml.safe_load(text if text is not None else ENVOY_CONFIG.read_text())
    config = copy.deepcopy(config)
    config["admin"]["address"] = _socket_address(admin)
    (listener,) = config["static_resources"]["listeners"]
    listener["address"] = _socket_address(listen)
    (cluster,) = config["static_resources"]["clusters"]
    (locality,) = cluster["load_assignment"]["endpoints"]
    (shipped,) = locality["lb_endpoints"]
    endpoints = []
    for replica in replicas:
        endpoint = copy.deepcopy(shipped)
        endpoint["endpoint"]["address"] = _socket_address(replica)
        endpoints.append(endpoint)
    locality["lb_endpoints"] = endpoints
    if not retries:
        for route in envoy_routes(config):
            route["route"].pop("retry_policy", None)
    return config


def envoy_routes(config: dict[str, Any]) -> list[dict[str, Any]]:
    """Every route of the config's one listener."""
    (listener,) = config["static_resources"]["listeners"]
    routes: list[dict[str, Any]] = []
    for chain in listener["filter_chains"]:
        for network_filter in chain["filters"]:
            manager = network_filter["typed_config"]
            for host in manager["route_config"]["virtual_hosts"]:
                routes.extend(host["routes"])
    return routes


_LISTEN = re.compile(r"^([ \t]*listen[ \t]+)(\d+)(\b[^;]*;)", re.MULTILINE)
_UPSTREAM_SERVER = re.compile(r"^([ \t]*)server[ \t]+blazerpc:50051(\b[^;]*;)", re.MULTILINE)


def nginx_config(*, listen_port: int, replicas: Sequence[Address], text: str | None = None) -> str:
    """The shipped nginx server block with its placeholders filled in."""
    source = text if text is not None else NGINX_CONFIG.read_text()
    listen = _LISTEN.findall(source)
    servers = _UPSTREAM_SERVER.findall(source)
    if len(listen) != 1 or len(servers) != 1:
        raise ValueError("expected one `listen PORT ...;` and one `server blazerpc:50051 ...;` line")
    source = _LISTEN.sub(lambda m: f"{m.group(1)}{listen_port}{m.group(3)}", source)
    indent, params = servers[0]
    lines = "\n".join(f"{indent}server {host}:{port}{params}" for host, port in replicas)
    return _UPSTREAM_SERVER.sub(lambda m: lines, source)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("proxy", choices=["envoy", "nginx"])
    parser.add_argument("--listen", required=True, help="envoy: HOST:PORT; nginx: PORT")
    parser.add_argument("--replica", action="append", required=True, help="HOST:PORT of a replica (repeat)")
    parser.add_argument("--admin", default="127.0.0.1:9901", help="envoy: admin HOST:PORT")
    parser.add_argument("--no-retries", action="store_true", help="envoy: drop the retry policy")
    args = parser.parse_args(argv)
    replicas = [parse_address(r) for r in args.replica]
    if args.proxy == "nginx":
        sys.stdout.write(nginx_config(listen_port=int(args.listen), replicas=replicas))
        return 0
    import yaml

    config = envoy_config(listen=parse_address(args.listen), admin=parse_address(args.admin), replicas=replicas,
                          retries=not args.no_retries)
    sys.stdout.write(yaml.safe_dump(config, sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
