"""What the bridge writes on a cluster for one job: its directory layout, job scripts, bundle.

All pure: text and bytes built here are uploaded over SFTP (never assembled by
``echo`` in a remote shell). One job's directory on the cluster::

    <work_root>/<job_id>/
        bundle.tar        every task's files and the job scripts (one upload)
        submit.sh         submits the two jobs once, however often it runs
        array.sbatch      one array element per task
        collect.sbatch    runs after the array (afterany), whatever its outcome
        ids               "array=<id> collect=<id>", written by submit.sh
        tasks/<i>/        task i: the simulator's input files, run.sh, its outputs,
                          .outputs.sha256 (checksums of its files, written after the run)
        logs/<i>.out      task i's stdout and stderr (SLURM --output)
        logs/collect.out  the collect job's output
        outputs.sha256    every task's checksums (written by the collect job)

The checksums let the bridge verify each task's outputs after the SFTP
download, whatever their size (the original lost results over 1 MB).
"""

from __future__ import annotations

import io
import re
import shlex
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from posixpath import join

from services.slurm_bridge.options import sbatch_lines

#: Job ids as the API makes them (``YYYYMMDD-HHMMSS-<uuid4>BATCH``); checked before a job
#: id becomes part of a path or a job name on the cluster.
_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,127}")
#: Work roots the bridge accepts: absolute, and free of anything a shell or an #SBATCH
#: line would split or expand.
_WORK_ROOT = re.compile(r"/[A-Za-z0-9_./+-]*")
CHECKSUMS = ".outputs.sha256"
BUNDLE_MTIME = 0


def check_job_id(job_id: str) -> str:
    """The job id, if it is safe in a path and a SLURM job name.

    Raises:
        ValueError: it is not.
    """
    if not _JOB_ID.fullmatch(job_id):
        raise ValueError(f"job id {job_id[:80]!r} cannot name a directory on a cluster")
    return job_id


def check_work_root(work_root: str) -> str:
    """The configured work root, if it is an absolute path without spaces or shell characters.

    Raises:
        ValueError: it is not.
    """
    if not _WORK_ROOT.fullmatch(work_root) or "/../" in f"{work_root}/":
        raise ValueError(f"work root {work_root!r} must be an absolute path of letters, "
                         "digits and _./+- only")
    return work_root


@dataclass(frozen=True)
class JobLayout:
    """Where one job's files are on the cluster (see the module docstring)."""

    job_id: str
    job_dir: str

    @classmethod
    def of(cls, work_root: str, job_id: str) -> JobLayout:
        return cls(check_job_id(job_id), join(check_work_root(work_root), job_id))

    def path(self, *parts: str) -> str:
        return join(self.job_dir, *parts)

    def task_dir(self, index: int) -> str:
        return self.path("tasks", str(index))

    def log(self, index: int) -> str:
        return self.path("logs", f"{index}.out")

    @property
    def collect_log(self) -> str:
        return self.path("logs", "collect.out")

    @property
    def ids(self) -> str:
        return self.path("ids")

    @property
    def bundle(self) -> str:
        return self.path("bundle.tar")

    @property
    def submit(self) -> str:
        return self.path("submit.sh")

    @property
    def job_name(self) -> str:
        """The SLURM job name of the array job (the collect job adds ``-collect``)."""
        return f"simjobs-{self.job_id}"


def _script(header: Sequence[str], body: Sequence[str]) -> str:
    return "\n".join(["#!/bin/bash", *header, *body]) + "\n"


def task_script(job_id: str, index: int, primaries: int, seed: int,
                argv: Sequence[str]) -> str:
    """``tasks/<i>/run.sh``: the simulator's command line, quoted word by word."""
    return _script([], [f"# task {index} of simjobs job {job_id}: {primaries} primaries, "
                        f"seed {seed}", f"exec {shlex.join(argv)}"])


def array_script(layout: JobLayout, ntasks: int, options: Mapping[str, str],
                 setup: Sequence[str]) -> str:
    """``array.sbatch``: element i runs task i in ``tasks/<i>`` and checksums its files.

    Options the bridge owns come first; ``options`` (checked against the allow-list,
    or the operator's defaults) follow; sbatch reads #SBATCH lines up to the first
    command, so the setup lines come after them all.
    """
    header = [
        f"#SBATCH --job-name={layout.job_name}",
        f"#SBATCH --array=0-{ntasks - 1}",
        f"#SBATCH --chdir={layout.job_dir}",
        f"#SBATCH --output={layout.path('logs', '%a.out')}",
        *sbatch_lines(options),
    ]
    body = [
        f"# simjobs job {layout.job_id}: one array element per task (by the SLURM bridge)",
        *setup,
        'cd "tasks/${SLURM_ARRAY_TASK_ID}" || exit 90',
        "bash ./run.sh",
        "status=$?",
        f"sha256sum -- * > {CHECKSUMS} 2>/dev/null",
        'exit "$status"',
    ]
    return _script(header, body)


def collect_script(layout: JobLayout, options: Mapping[str, str],
                   setup: Sequence[str]) -> str:
    """``collect.sbatch``: after the array, the job-level checksum manifest ``outputs.sha256``.

    The bridge merges the results itself (as on the direct platform); this job marks the
    end of the job's work on the cluster and leaves the manifest with the results.
    """
    header = [
        f"#SBATCH --job-name={layout.job_name}-collect",
        f"#SBATCH --chdir={layout.job_dir}",
        f"#SBATCH --output={layout.collect_log}",
        *sbatch_lines(options),
    ]
    body = [
        f"# simjobs job {layout.job_id}: runs after every task ended (by the SLURM bridge)",
        *setup,
        "for dir in tasks/*; do",
        f'  [ -f "$dir/{CHECKSUMS}" ] && sed "s#  #  $dir/#" "$dir/{CHECKSUMS}"',
        "done > outputs.sha256",
        'echo "collect: $(wc -l < outputs.sha256) task files checksummed"',
    ]
    return _script(header, body)


def submit_script(layout: JobLayout) -> str:
    """``submit.sh``: unpack the bundle, submit the array and the collect job, record the ids.

    It submits at most once per job directory: the array id is written the moment
    sbatch prints it, and a second run (a bridge that crashed before it recorded the
    submission) finds the ids instead of submitting again. If the collect job cannot
    be submitted the array is cancelled, so no half-submitted job is left behind.
    Exit codes 91-93 say which step failed; sbatch's own message is on stderr.
    """
    return _script([], [
        f"# simjobs job {layout.job_id}: submits once (by the SLURM bridge)",
        "set -u",
        f"cd {shlex.quote(layout.job_dir)} || exit 90",
        "if [ -s ids ]; then cat ids; exit 0; fi",
        "if [ ! -s array.id ]; then",
        "  tar --no-same-owner --no-same-permissions -xf bundle.tar || exit 91",
        "  sbatch --parsable array.sbatch > array.id || { rm -f array.id; exit 92; }",
        "fi",
        "array=$(cut -d';' -f1 < array.id)",
        'collect=$(sbatch --parsable --dependency="afterany:${array}" collect.sbatch) \\',
        '  || { scancel "$array"; rm -f array.id; exit 93; }',
        'printf "array=%s collect=%s\\n" "$array" "${collect%%;*}" > ids.tmp && mv ids.tmp ids',
        "cat ids",
    ])


def bundle(files: Mapping[str, bytes]) -> bytes:
    """A tar archive of ``files`` (relative path -> content), the same bytes every time.

    Raises:
        ValueError: a path that is absolute or leaves the job directory.
    """
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            parts = name.split("/")
            if name.startswith("/") or any(p in ("", ".", "..") for p in parts):
                raise ValueError(f"bundle member {name!r} would leave the job directory")
            data = files[name]
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = BUNDLE_MTIME
            info.mode = 0o755 if name.endswith(".sh") else 0o644
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()
