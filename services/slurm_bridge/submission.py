"""What one batch job becomes on a cluster: tasks, scripts and the bundle (pure).

The tasks are those of the direct platform: primaries split with no remainder
lost (:func:`~services.contract.jobs.split_primaries`), seeds derived from the
job's base seed (:func:`~services.contract.jobs.task_seed`), each task's files
and command line from the same simulator plug-in, with the executable the
cluster configures. So a batch job and a direct job with the same base seed
run the same tasks and merge to the same result.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from services.contract.jobs import split_primaries, task_seed
from services.settings import ClusterConfig
from services.simulators.base import Simulator, safe_name
from services.simulators.errors import BadInput
from services.slurm_bridge import options as slurm_options
from services.slurm_bridge.scripts import (
    CHECKSUMS,
    JobLayout,
    array_script,
    bundle,
    collect_script,
    submit_script,
    task_script,
)

#: Files the bridge writes into every task directory.
RESERVED_NAMES = frozenset({"run.sh", CHECKSUMS})


@dataclass(frozen=True)
class PlannedTask:
    """One task: its index, share of primaries and seed."""

    index: int
    primaries: int
    seed: int


@dataclass(frozen=True)
class SubmissionPlan:
    """Everything to upload for one job, and the tasks it runs."""

    layout: JobLayout
    tasks: tuple[PlannedTask, ...]
    bundle: bytes
    submit_script: str
    array_options: Mapping[str, str]
    collect_options: Mapping[str, str]


def planned_tasks(total_primaries: int, ntasks: int, base_seed: int) -> tuple[PlannedTask, ...]:
    """The job's tasks, exactly as the direct platform's coordinator makes them."""
    shares = split_primaries(total_primaries, ntasks)
    return tuple(PlannedTask(i, n, task_seed(base_seed, i)) for i, n in enumerate(shares))


def plan_submission(*, job_id: str, cluster: ClusterConfig, simulator: Simulator,
                    input_files: Mapping[str, str], total_primaries: int, ntasks: int,
                    base_seed: int, batch_options: Mapping[str, Any]) -> SubmissionPlan:
    """The files of one job on ``cluster``.

    Raises:
        OptionRefused: a SLURM option of the request is refused by the allow-list.
        BadInput: the simulator plug-in cannot run the input.
        ValueError: the job id or the cluster's work root cannot be used in paths.
    """
    layout = JobLayout.of(cluster.work_root, job_id)
    array_request, collect_request = slurm_options.request_options(batch_options)
    array_opts = slurm_options.merged(cluster.array_options, array_request)
    collect_opts = slurm_options.merged(cluster.collect_options, collect_request)
    reserved = RESERVED_NAMES & set(input_files)
    if reserved:
        raise BadInput(f"input file names {sorted(reserved)} are reserved on the batch "
                       "platform (the bridge writes them)")
    tasks = planned_tasks(total_primaries, ntasks, base_seed)
    files: dict[str, bytes] = {
        "array.sbatch": array_script(layout, ntasks, array_opts, cluster.setup).encode(),
        "collect.sbatch": collect_script(layout, collect_opts, cluster.setup).encode(),
    }
    for task in tasks:
        task_dir = PurePosixPath(layout.task_dir(task.index))
        for name, text in simulator.task_files(input_files, task.primaries, task.seed).items():
            files[f"tasks/{task.index}/{safe_name(name)}"] = text.encode()
        argv = simulator.command(task_dir, task.seed)
        files[f"tasks/{task.index}/run.sh"] = task_script(
            job_id, task.index, task.primaries, task.seed, argv).encode()
    return SubmissionPlan(layout=layout, tasks=tasks, bundle=bundle(files),
                          submit_script=submit_script(layout), array_options=array_opts,
                          collect_options=collect_opts)
