"""``python -m services.healthcheck PROBE... [--pid PID]``: is the service up and connected.

The container health checks of ``docker-compose.yml`` run this inside each service's
container, with the service's own environment, so every address comes from the same
settings the service reads (no host name is written twice). Probes:

* ``api``: ``GET /`` of the API (``SIMJOBS_API_PORT``) answers 200;
* ``kafka``: an established connection to one of ``SIMJOBS_KAFKA_BOOTSTRAP``'s brokers
  (consumers long-poll, so a live consumer always holds one);
* ``database``: an established connection to the host of ``SIMJOBS_DATABASE_URL``
  (the engine's pool keeps it open; SQLite has no connection and passes);
* ``http://...``: that URL answers 2xx (for the ``/healthz``/``/readyz`` endpoints once
  the services have them).

Connections are those of the whole network namespace (inside a container: the
service's), or of process ``--pid`` only. Exit status 0 when every probe passes, else 1;
one line per probe on stdout (Docker keeps it in ``docker inspect``).
"""

from __future__ import annotations

import argparse
import socket
import sys
import urllib.error
import urllib.request
from collections.abc import Callable

from sqlalchemy import make_url

from services import procnet
from services.settings import load_api_settings, load_settings

PROBES = ("api", "kafka", "database")
TIMEOUT_S = 3.0


class Unhealthy(Exception):
    """A probe failed; the message says what was expected and what was found."""


def _addresses(host: str, port: int) -> set[procnet.Address]:
    """Every address ``host`` resolves to (a service name may map to several)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise Unhealthy(f"cannot resolve {host}: {exc}") from exc
    return {(str(info[4][0]), port) for info in infos}


def _host_port(server: str) -> tuple[str, int]:
    host, _, port = server.strip().rpartition(":")
    return host.strip("[]"), int(port)


def _connected(what: str, servers: list[tuple[str, int]], pid: int | None) -> str:
    remotes: set[procnet.Address] = set()
    for host, port in servers:
        remotes |= _addresses(host, port)
    found = procnet.connected_to(remotes, pid)
    if not found:
        names = ", ".join(f"{h}:{p}" for h, p in servers)
        raise Unhealthy(f"{what}: no established connection to {names}")
    return f"{what}: {len(found)} connection(s) to {found[0].remote[0]}:{found[0].remote[1]}"


def probe_kafka(pid: int | None) -> str:
    """An established connection to one of the bootstrap brokers."""
    servers = [_host_port(s) for s in load_settings().kafka.bootstrap_servers.split(",") if s]
    return _connected("kafka", servers, pid)


def probe_database(pid: int | None) -> str:
    """An established connection to the read model's database server."""
    url = make_url(load_settings().database.url)
    if url.get_backend_name() == "sqlite":
        return "database: SQLite (a file, no connection to check)"
    return _connected("database", [(url.host or "127.0.0.1", url.port or 5432)], pid)


def probe_url(url: str) -> str:
    """The URL answers with a 2xx status."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            status = int(response.status)
    except (urllib.error.URLError, OSError) as exc:
        raise Unhealthy(f"{url}: {exc}") from exc
    if not 200 <= status < 300:
        raise Unhealthy(f"{url}: status {status}")
    return f"{url}: {status}"


def api_url() -> str:
    """Where this host reaches the API it runs (a wildcard bind is reached on loopback)."""
    api = load_api_settings()
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(api.host, api.host)
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{api.port}/"


def run_probe(name: str, pid: int | None) -> str:
    """Run one probe; its report line.

    Raises:
        Unhealthy: the probe failed.
        ValueError: the name is not a probe, or a setting is malformed.
    """
    probes: dict[str, Callable[[], str]] = {
        "api": lambda: probe_url(api_url()),
        "kafka": lambda: probe_kafka(pid),
        "database": lambda: probe_database(pid),
    }
    if name.startswith(("http://", "https://")):
        return probe_url(name)
    if name not in probes:
        raise ValueError(f"unknown probe {name!r} (known: {', '.join(PROBES)}, or a URL)")
    return probes[name]()


def parser() -> argparse.ArgumentParser:
    """The command line (also used by the deployment test to read compose's checks)."""
    p = argparse.ArgumentParser(prog="python -m services.healthcheck", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("probes", nargs="+", metavar="PROBE",
                   help=f"{', '.join(PROBES)}, or an http(s) URL")
    p.add_argument("--pid", type=int, default=None,
                   help="look at this process's connections only")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run every probe; 0 if all pass, 1 if any fails, 2 on a usage or settings error."""
    args = parser().parse_args(argv)
    status = 0
    for name in args.probes:
        try:
            print(f"ok {run_probe(name, args.pid)}")
        except Unhealthy as exc:
            print(f"FAIL {exc}")
            status = max(status, 1)
        except ValueError as exc:
            print(f"ERROR {exc}")
            status = 2
    return status


if __name__ == "__main__":
    sys.exit(main())
