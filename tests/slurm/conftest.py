"""The batch platform's test set-up: a real SLURM and sshd, the real bridge, Kafka, projector.

``devstack/slurm.py`` installs (on a fresh machine) and starts a single-node SLURM
cluster and an sshd on 127.0.0.1 once per session, left running like the broker
(``make down`` stops it). The stand-in simulator is installed on the "cluster" as an
operator installs SHIELD-HIT12A there: copied over SFTP into the session's own work
root, and named in the cluster's ``executables``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from devstack import process_alive, read_pid, slurm
from services import procnet
from services.api.common import ENGINE
from services.artifacts.store import ArtifactStore
from services.contract.envelope import Event
from services.contract.kafka_io import EventDecoder, EventProducer
from services.contract.log_reader import LogReader
from services.platform.outcome import CompletedProcess
from services.projector.readmodel import load_views
from services.projector.state import JobView
from services.runner.service import Runner
from services.settings import ClusterConfig, KafkaSettings, RunnerSettings, SlurmBridgeSettings
from services.slurm_bridge.bridge import Bridge
from services.slurm_bridge.ssh import AsyncSSHBackend, RemoteBackend
from tests.api.conftest import (
    Realm,
    api_settings,
    make_settings,
    realm,
    running_stack,
)
from tests.api.conftest import Stack as ApiStack
from tests.runner.conftest import FAKE_SIMULATOR, Stack, beam, stack

ROOT = Path(__file__).resolve().parents[2]
SETUP_FAST = ("export FAKE_SIM_STEP_SECONDS=0.2",)


@pytest.fixture(scope="session")
def slurm_cluster() -> slurm.SlurmHandle:
    """The session's SLURM cluster and sshd (installed and started by the project)."""
    return slurm.start()


@dataclass(frozen=True)
class ClusterSite:
    """This session's corner of the cluster: a work root with the simulator installed."""

    handle: slurm.SlurmHandle
    root: str

    @property
    def simulator(self) -> str:
        return f"{self.root}/bin/shieldhit"

    def config(self, name: str = "local", **changes: Any) -> ClusterConfig:
        base = ClusterConfig(
            name=name, host=self.handle.host, port=self.handle.ssh_port, user=self.handle.user,
            private_key=self.handle.private_key, known_hosts=self.handle.known_hosts,
            work_root=f"{self.root}/jobs", setup=SETUP_FAST,
            # The engine runs where the project is: on this one-node "cluster" the same
            # path as here, under this interpreter (it has NumPy; slurmuser may run it).
            executables={"shieldhit": self.simulator, "builtin": sys.executable},
            array_options={"time": "00:10:00"}, collect_options={"time": "00:05:00"},
            poll_interval=0.5)
        return replace(base, **changes)


async def _install(handle: slurm.SlurmHandle, root: str) -> None:
    site = ClusterSite(handle, root)
    backend = AsyncSSHBackend(site.config())
    try:
        await backend.makedirs(f"{root}/bin")
        await backend.write_file(site.simulator, FAKE_SIMULATOR.read_bytes())
        done = await backend.run(f"chmod 755 {site.simulator}", time_limit=30)
        assert done.returncode == 0, done
    finally:
        await backend.close()


@pytest.fixture(scope="session")
def cluster_site(slurm_cluster: slurm.SlurmHandle) -> ClusterSite:
    """A fresh work root for this session, with the stand-in simulator installed."""
    root = f"{slurm_cluster.user_home}/simjobs-tests/{uuid.uuid4().hex[:10]}"
    asyncio.run(_install(slurm_cluster, root))
    return ClusterSite(slurm_cluster, root)


class RecordingBackend(AsyncSSHBackend):
    """The real asyncssh backend, also keeping every command it ran (to prove what did not)."""

    def __init__(self, cluster: ClusterConfig, **kwargs: Any) -> None:
        super().__init__(cluster, **kwargs)
        self.commands: list[str] = []

    async def run(self, command: str, *, input: bytes | None = None,
                  time_limit: float | None = None) -> CompletedProcess:
        self.commands.append(command)
        return await super().run(command, input=input, time_limit=time_limit)


def bridge_settings(tmp_path: Path, kafka: KafkaSettings, *clusters: ClusterConfig,
                    **changes: Any) -> SlurmBridgeSettings:
    base = SlurmBridgeSettings(
        clusters=clusters, workdir_root=tmp_path / "bridge-work",
        group_id=f"{kafka.topic_prefix}-bridge", submit_deadline=4.0, command_timeout=30.0,
        connect_timeout=5.0, reconnect_min=0.2, reconnect_max=1.0)
    return replace(base, **changes)


@dataclass
class BatchStack:
    """Projector + producer (the runner conftest's stack) and an in-process bridge."""

    base: Stack
    bridge: Bridge
    backends: dict[str, RecordingBackend] = field(default_factory=dict)

    async def submit(self, files: dict[str, str], *, ntasks: int, primaries: int,
                     **options: Any) -> str:
        """Publish a batch JobSubmitted as the API does (without the API's checks)."""
        event = batch_job_event(self.base.artifacts, files, ntasks=ntasks,
                                primaries=primaries, **options)
        await self.base.producer.publish(event)
        return event.job_id


def batch_job_event(artifacts: ArtifactStore, files: dict[str, str], *, ntasks: int,
                    primaries: int, owner: str = "kc:test", cluster: str = "local",
                    base_seed: int = 4242, batch_options: dict[str, Any] | None = None,
                    sim_type: str = "shieldhit") -> Event:
    """A batch JobSubmitted with its input stored, as the API writes one."""
    input_ref = artifacts.put_json({
        "input_type": "FILES", "input_files": files, "number_of_all_primaries": primaries})
    return Event(
        type="JobSubmitted", job_id=f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-"
                                    f"{uuid.uuid4()}BATCH", producer="test",
        payload={"owner": owner, "title": "batch test", "sim_type": sim_type,
                 "platform": "batch", "input_type": "files", "ntasks": ntasks,
                 "number_of_all_primaries": primaries, "base_seed": base_seed,
                 "input_ref": input_ref,
                 "batch_options": {"cluster_name": cluster, **(batch_options or {})}})


def recording_factory(backends: dict[str, RecordingBackend]) -> Any:
    def make(cluster: ClusterConfig, settings: SlurmBridgeSettings) -> RemoteBackend:
        backend = RecordingBackend(cluster, connect_timeout=settings.connect_timeout)
        backends[cluster.name] = backend
        return backend
    return make


@contextlib.asynccontextmanager
async def running_bridge(kafka: KafkaSettings, settings: SlurmBridgeSettings,
                         artifacts: ArtifactStore) -> AsyncIterator[tuple[Bridge,
                                                                         dict[str,
                                                                              RecordingBackend]]]:
    backends: dict[str, RecordingBackend] = {}
    bridge = Bridge(kafka, settings, artifacts, backend_factory=recording_factory(backends))
    task = asyncio.create_task(bridge.run())
    try:
        yield bridge, backends
    finally:
        await bridge.shutdown()
        await task


@contextlib.asynccontextmanager
async def batch_stack(kafka: KafkaSettings, tmp_path: Path,
                      settings: SlurmBridgeSettings) -> AsyncIterator[BatchStack]:
    async with stack(kafka, None, tmp_path) as base, \
            running_bridge(kafka, settings, base.artifacts) as (bridge, backends):
        yield BatchStack(base, bridge, backends)


@dataclass
class ApiBatchStack:
    """The API (with its projector), the bridge and, for direct twins, a runner."""

    api: ApiStack
    artifacts: ArtifactStore
    bridge: Bridge
    backends: dict[str, RecordingBackend]
    producer: EventProducer

    async def publish_batch(self, files: dict[str, str], **options: Any) -> str:
        """A batch job published straight to the log (chosen base seed, no API checks)."""
        event = batch_job_event(self.artifacts, files, **options)
        await self.producer.publish(event)
        return event.job_id

    async def views(self, *job_ids: str) -> dict[str, JobView]:
        async with self.api.app[ENGINE].connect() as conn:
            return await load_views(conn, list(job_ids))

    async def events(self, job_id: str) -> list[Event]:
        decoder = EventDecoder(validate=True)
        found = []
        kafka = self.api.settings.kafka
        async for records in LogReader(kafka, kafka.jobs_topic).batches():
            for record in records:
                event = decoder.decode(record.value)
                if event is not None and event.job_id == job_id:
                    found.append(event)
        assert not decoder.skipped, decoder.skipped
        return found


@contextlib.asynccontextmanager
async def api_batch_stack(kafka: KafkaSettings, tmp_path: Path, realm: Realm,
                          settings: SlurmBridgeSettings, *,
                          runner: RunnerSettings | None = None,
                          **api_overrides: Any) -> AsyncIterator[ApiBatchStack]:
    app_settings = make_settings(kafka, f"sqlite+aiosqlite:///{tmp_path / 'api.sqlite3'}",
                                 tmp_path / "state")
    clusters = tuple(ClusterConfig(c.name) for c in settings.clusters)
    api = api_settings(realm, clusters=clusters, **{"batch_submit_wait_seconds": 20.0,
                                                    **api_overrides})
    artifacts = ArtifactStore(app_settings.artifacts.root)
    async with running_stack(app_settings, api) as api_stack, \
            running_bridge(kafka, settings, artifacts) as (bridge, backends), \
            EventProducer(kafka) as producer:
        runner_task = None
        direct = Runner(kafka, runner, artifacts) if runner is not None else None
        if direct is not None:
            runner_task = asyncio.create_task(direct.run())
        try:
            yield ApiBatchStack(api_stack, artifacts, bridge, backends, producer)
        finally:
            if direct is not None and runner_task is not None:
                await direct.shutdown()
                await runner_task


async def cluster_run(site: ClusterSite, command: str) -> CompletedProcess:
    """A command on the cluster over a connection of the test's own."""
    backend = AsyncSSHBackend(site.config())
    try:
        return await backend.run(command, time_limit=60)
    finally:
        await backend.close()


async def slurm_jobs_named(site: ClusterSite, name: str) -> list[str]:
    """``id|state`` of every SLURM job (array tasks too) with this name, as squeue knows them."""
    done = await cluster_run(site, f"squeue --noheader --states=all --name={name} "
                                   "--Format='JobArrayID:|,State:|'")
    assert done.returncode == 0, done
    return sorted(line.rstrip("|") for line in done.stdout_text.splitlines() if line)


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        ppid = next((line.split()[1] for line in status.splitlines()
                     if line.startswith("PPid:")), None)
        if ppid == str(pid):
            found.append(int(entry.name))
    return found


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants, parents before children."""
    tree, level = [pid], [pid]
    while level:
        level = [child for parent in level for child in _children(parent)]
        tree.extend(level)
    return tree


def client_address(backend: AsyncSSHBackend) -> tuple[str, int]:
    """The local end of the backend's open SSH connection (to find the sshd serving it)."""
    conn = backend._open()
    assert conn is not None, f"no open SSH connection to {backend.where}"
    host, port = conn.get_extra_info("sockname")[:2]
    return str(host), int(port)


def kill_ssh_connection(site: ClusterSite, client: tuple[str, int]) -> list[int]:
    """SIGKILL the sshd session that serves the connection from ``client``: that one drops.

    The session is the listener's child whose tree holds the accepted end of the
    connection (found in the kernel's socket table); every other session of the shared
    sshd is left alone. Parents go first, so the session cannot report how its command
    ended: the client sees the connection break, as when a network link dies.
    """
    master = read_pid(site.handle.sshd_pid_file)
    assert master is not None and process_alive(master)
    for session in _children(master):
        victims = _tree(session)
        if procnet.server_of(client, site.handle.ssh_port, victims) is not None:
            for pid in victims:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            return victims
    raise AssertionError(f"no sshd session serves the connection from {client}")



@dataclass
class BridgeProcess:
    """``python -m services.slurm_bridge`` as a process of its own (to be SIGKILLed)."""

    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        out = self.log.open("ab")
        self.process = subprocess.Popen([sys.executable, "-m", "services.slurm_bridge"],
                                        cwd=ROOT, env=self.env, stdout=out,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        out.close()

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def cluster_json(*configs: ClusterConfig) -> str:
    """``SIMJOBS_CLUSTERS`` for a bridge process that knows these clusters."""
    return json.dumps([{
        "name": config.name, "host": config.host, "port": config.port, "user": config.user,
        "private_key": str(config.private_key), "known_hosts": str(config.known_hosts),
        "work_root": config.work_root, "setup": list(config.setup),
        "executables": dict(config.executables), "array_options": dict(config.array_options),
        "collect_options": dict(config.collect_options),
        "poll_interval": config.poll_interval} for config in configs])


@pytest.fixture
def bridge_process(tmp_path: Path, kafka_settings: KafkaSettings,
                   cluster_site: ClusterSite) -> Iterator[BridgeProcess]:
    env = {**os.environ,
           "SIMJOBS_KAFKA_BOOTSTRAP": kafka_settings.bootstrap_servers,
           "SIMJOBS_TOPIC_PREFIX": kafka_settings.topic_prefix,
           "SIMJOBS_JOBS_PARTITIONS": str(kafka_settings.jobs_partitions),
           "SIMJOBS_TASKS_PARTITIONS": str(kafka_settings.tasks_partitions),
           "SIMJOBS_STATE_DIR": str(tmp_path / "state"),
           "SIMJOBS_ARTIFACT_DIR": str(tmp_path / "artifacts"),
           "SIMJOBS_CLUSTERS": cluster_json(cluster_site.config()),
           "SIMJOBS_SLURM_BRIDGE_GROUP": f"{kafka_settings.topic_prefix}-bridge",
           "SIMJOBS_SLURM_RECONNECT_MIN": "0.2", "SIMJOBS_SLURM_RECONNECT_MAX": "1"}
    process = BridgeProcess(env, tmp_path / "bridge.log")
    yield process
    process.stop()


__all__ = ["BatchStack", "ClusterSite", "beam", "realm"]
