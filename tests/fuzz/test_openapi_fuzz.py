"""schemathesis against the running API, logged in: no 5xx, every response as the spec says.

The API and its projector run as real processes (``python -m services.api`` and
``python -m services.projector``) against the session's broker with a topic prefix of
their own and a fresh SQLite read model, as in production. Every documented operation is
called with generated inputs, valid and invalid; the checks are exactly the issue's: no
server error, a status code the spec lists for the operation, its content type, and a body
that matches the response schema. The counts of calls by status are printed at the end
(``-s`` shows them).
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from devstack import pick_free_ports, tail
from tests.conftest import new_prefix

pytestmark = [pytest.mark.kafka, pytest.mark.fuzz]

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "schemas" / "openapi.yaml"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
#: Calls made and their statuses, per operation (printed at the end of the session).
STATUSES: collections.Counter[tuple[str, int]] = collections.Counter()


def _wait_ready(base: str, procs: dict[str, subprocess.Popen[bytes]], logs: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        for name, proc in procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited: {tail(logs / f'{name}.log')}")
        try:
            if requests.get(base + "/", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"API not ready: {tail(logs / 'api.log')}")


@pytest.fixture(scope="module")
def live_api(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[str]:
    """Base URL of an API (and projector) running as their own processes."""
    state = tmp_path_factory.mktemp("fuzz-state")
    (port,) = pick_free_ports(1)
    prefix = new_prefix()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIMJOBS_")}
    env.update({
        "SIMJOBS_KAFKA_BOOTSTRAP": kafka_bootstrap, "SIMJOBS_TOPIC_PREFIX": prefix,
        "SIMJOBS_JOBS_PARTITIONS": "2", "SIMJOBS_TASKS_PARTITIONS": "2",
        "SIMJOBS_STATE_DIR": str(state), "SIMJOBS_PROJECTOR_GROUP": f"{prefix}-projector",
        "SIMJOBS_API_PORT": str(port), "SIMJOBS_API_MAX_BODY_BYTES": str(256 * 1024),
        "SIMJOBS_API_LOGIN_MAX_FAILURES": "1000000",
        "SIMJOBS_CLUSTERS": '[{"name": "ares"}]',
    })
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name in ("projector", "api"):
            with (state / f"{name}.log").open("wb") as out:
                procs[name] = subprocess.Popen(
                    [sys.executable, "-m", f"services.{name}"], cwd=ROOT, env=env,
                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        _wait_ready(base, procs, state)
        yield base
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        print("\nschemathesis calls by operation and status:")
        for (operation, status), count in sorted(STATUSES.items()):
            print(f"  {operation:<32} {status}: {count}")
        print(f"  total: {sum(STATUSES.values())} calls, "
              f"{sum(c for (_, s), c in STATUSES.items() if s >= 500)} with a 5xx")


@pytest.fixture(scope="module")
def user_session(live_api: str) -> Iterator[requests.Session]:
    """A logged-in user with one real job, so job routes are also called on a found job."""
    session = requests.Session()
    creds = {"username": "fuzzer", "password": "pw-fuzzer-123"}
    assert session.put(live_api + "/auth/register", json=creds).status_code == 201
    assert session.post(live_api + "/auth/login", json=creds).status_code == 202
    files = {"beam.dat": "NSTAT 100 0\n", "geo.dat": "", "mat.dat": "", "detect.dat": ""}
    body: dict[str, Any] = {"sim_type": "shieldhit", "ntasks": 2, "input_type": "files",
                            "input_files": files}
    assert session.post(live_api + "/jobs/direct", json=body).status_code == 202
    yield session
    session.close()


schema = schemathesis.openapi.from_path(str(SPEC))


@schema.parametrize()
@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_operation_never_fails_and_answers_as_documented(
        case: Any, live_api: str, user_session: requests.Session) -> None:
    response = case.call_and_validate(base_url=live_api, session=user_session, checks=CHECKS)
    STATUSES[(f"{case.method} {case.path}", response.status_code)] += 1
