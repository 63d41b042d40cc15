"""One cluster's operations: each is a builder, one round trip through the backend, a parser.

This is the only place where the SLURM command builders and parsers of
:mod:`services.slurm_bridge.commands` meet the SSH backend.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from services.settings import ClusterConfig
from services.slurm_bridge import commands
from services.slurm_bridge.commands import StatusSnapshot, SubmittedIds
from services.slurm_bridge.errors import OutputError
from services.slurm_bridge.scripts import CHECKSUMS, JobLayout
from services.slurm_bridge.ssh import RemoteBackend
from services.slurm_bridge.submission import SubmissionPlan

log = logging.getLogger(__name__)

#: How much of a task's log is kept for its log artifact (the end is kept), as on the runner.
MAX_LOG_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class FetchedTask:
    """A task's files brought back from the cluster (outputs checked against its checksums)."""

    local_dir: Path
    log: bytes
    checked_files: int


class ChecksumMismatch(OutputError):
    """A downloaded output differs from what the task checksummed on the cluster."""


class ClusterClient:
    """Submit, query, cancel and fetch on one cluster (see the module docstring)."""

    def __init__(self, config: ClusterConfig, backend: RemoteBackend, *,
                 command_timeout: float) -> None:
        self.config = config
        self.backend = backend
        self.command_timeout = command_timeout

    async def submit(self, plan: SubmissionPlan) -> SubmittedIds:
        """Upload the job's bundle and submit script over SFTP, then run the script.

        A job directory that already records ids (a bridge that crashed after submitting)
        answers with them: nothing is uploaded over a running job, nothing submitted twice.

        Raises:
            RemoteError: the cluster is unreachable or the upload broke off.
            SlurmRefused: sbatch refused the job (its message is in the error).
        """
        layout = plan.layout
        await self.backend.makedirs(layout.path("logs"))
        recorded = await self.backend.read_file(layout.ids)
        known = commands.parse_ids_file(recorded.decode(errors="replace")) if recorded else None
        if known is not None:
            log.info("cluster %s: job %s was submitted before (%s); not again",
                     self.config.name, layout.job_id, known)
            return known
        await self.backend.write_file(layout.bundle, plan.bundle)
        await self.backend.write_file(layout.submit, plan.submit_script.encode())
        result = await self.backend.run(commands.build_submit_command(layout.submit),
                                        time_limit=self.command_timeout)
        return commands.parse_submit(result)

    async def status(self, job_ids: list[str], log_paths: list[str]) -> StatusSnapshot:
        """One round trip: squeue for ``job_ids`` and the tails of ``log_paths``.

        Raises:
            RemoteError: the cluster is unreachable.
            CommandFailed: squeue failed (the controller is down, ...).
        """
        result = await self.backend.run(commands.build_status_command(job_ids),
                                        input=commands.status_input(log_paths),
                                        time_limit=self.command_timeout)
        return commands.parse_status(result)

    async def cancel(self, job_ids: list[str]) -> None:
        """Scancel the jobs (finished or unknown ones are no error).

        Raises:
            RemoteError: the cluster is unreachable.
            CommandFailed: scancel refused (e.g. another user's job).
        """
        result = await self.backend.run(commands.build_scancel_command(job_ids),
                                        time_limit=self.command_timeout)
        commands.parse_scancel(result)

    async def fetch_log(self, layout: JobLayout, index: int) -> bytes:
        """A task's log (its last :data:`MAX_LOG_BYTES`); empty if it wrote none."""
        data = await self.backend.read_file(layout.log(index), last_bytes=MAX_LOG_BYTES)
        return data or b""

    async def fetch_task(self, layout: JobLayout, index: int, local_dir: Path) -> FetchedTask:
        """Download a completed task's directory and log, and verify its checksums.

        Raises:
            RemoteError: the download broke off (retry) or a file cannot be read.
            ChecksumMismatch: a file differs from its checksum, or there are none.
        """
        await asyncio.to_thread(shutil.rmtree, local_dir, True)
        await self.backend.download_dir(layout.task_dir(index), local_dir)
        log_bytes = await self.fetch_log(layout, index)
        checked = await asyncio.to_thread(verify_checksums, local_dir)
        return FetchedTask(local_dir, log_bytes, checked)


def verify_checksums(task_dir: Path) -> int:
    """Check every file named in the task's ``sha256sum`` output; return how many.

    Raises:
        ChecksumMismatch: no checksum file, a file missing, or a digest that differs.
    """
    listing = task_dir / CHECKSUMS
    if not listing.is_file():
        raise ChecksumMismatch(f"the task left no {CHECKSUMS} (did the job script run to "
                               "its end?)")
    count = 0
    for line in listing.read_text(errors="replace").splitlines():
        digest, sep, name = line.partition("  ")
        if not sep:
            continue
        path = task_dir / name
        if not path.is_file() or path.parent != task_dir:
            raise ChecksumMismatch(f"output {name!r} listed in {CHECKSUMS} was not downloaded")
        with path.open("rb") as handle:
            actual = hashlib.file_digest(handle, "sha256").hexdigest()
        if actual != digest:
            raise ChecksumMismatch(f"output {name!r} changed on its way from the cluster "
                                   f"(sha256 {actual[:12]}..., expected {digest[:12]}...)")
        count += 1
    return count
