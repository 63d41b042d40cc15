"""What a job becomes on a cluster (scripts, bundle, plan) and how ended tasks are read: offline."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from services.contract.jobs import split_primaries, task_seed
from services.settings import ClusterConfig
from services.simulators.errors import BadInput
from services.simulators.shieldhit import ShieldHit, seed_offset
from services.slurm_bridge.cluster import ChecksumMismatch, verify_checksums
from services.slurm_bridge.commands import LOG_TAIL_BYTES, SlurmRecord, parse_squeue_line
from services.slurm_bridge.errors import OptionRefused
from services.slurm_bridge.scripts import (
    CHECKSUMS,
    JobLayout,
    array_script,
    bundle,
    collect_script,
    submit_script,
)
from services.slurm_bridge.submission import plan_submission
from services.slurm_bridge.tracking import failure, platform_state, progress, tasks_seen
from tests.runner.conftest import beam

JOB = "20261201-120000-0b8e2f3a-1c2d-4e5f-8a9b-0c1d2e3f4a5bBATCH"
CLUSTER = ClusterConfig(name="c", host="h", user="u", work_root="/scratch/u/simjobs",
                        setup=("module load shieldhit", "export OMP_NUM_THREADS=1"),
                        executables={"shieldhit": "/opt/sh12a/bin/shieldhit"},
                        array_options={"partition": "plgrid", "time": "00:59:59"},
                        collect_options={"time": "00:10:00"})


def record(line: str) -> SlurmRecord:
    return parse_squeue_line(line)


@pytest.mark.parametrize("job_id", ["../x", "a b", "a/b", "", "x;id", "-rf", "é"])
def test_job_ids_that_would_leave_the_work_root_are_refused(job_id: str) -> None:
    with pytest.raises(ValueError, match="cannot name a directory"):
        JobLayout.of("/scratch", job_id)


@pytest.mark.parametrize("root", ["relative", "/a b", "/x/../etc", "/$HOME", "/a;b", ""])
def test_work_roots_with_spaces_or_shell_characters_are_refused(root: str) -> None:
    with pytest.raises(ValueError, match="work root"):
        JobLayout.of(root, JOB)


def test_array_script_puts_the_bridges_lines_first_and_setup_after_every_sbatch_line() -> None:
    layout = JobLayout.of(CLUSTER.work_root, JOB)
    text = array_script(layout, 4, {"time": "01:00:00", "mem": "2G"}, CLUSTER.setup)
    lines = text.splitlines()
    assert lines[0] == "#!/bin/bash"
    assert lines[1:5] == [f"#SBATCH --job-name=simjobs-{JOB}", "#SBATCH --array=0-3",
                          f"#SBATCH --chdir=/scratch/u/simjobs/{JOB}",
                          f"#SBATCH --output=/scratch/u/simjobs/{JOB}/logs/%a.out"]
    assert lines[5:7] == ["#SBATCH --mem=2G", "#SBATCH --time=01:00:00"]
    last_sbatch = max(i for i, line in enumerate(lines) if line.startswith("#SBATCH"))
    assert lines.index("module load shieldhit") > last_sbatch
    assert f"sha256sum -- * > {CHECKSUMS} 2>/dev/null" in lines
    assert lines[-1] == 'exit "$status"'
    collect = collect_script(layout, {"time": "00:10:00"}, CLUSTER.setup)
    assert f"#SBATCH --job-name=simjobs-{JOB}-collect" in collect
    assert "#SBATCH --array" not in collect


def test_submit_script_submits_once_and_cancels_a_half_submission() -> None:
    text = submit_script(JobLayout.of(CLUSTER.work_root, JOB))
    assert "if [ -s ids ]; then cat ids; exit 0; fi" in text
    assert "sbatch --parsable array.sbatch > array.id" in text
    assert '|| { scancel "$array"; rm -f array.id; exit 93; }' in text
    assert text.index("tar --no-same-owner") < text.index("sbatch --parsable array.sbatch")


def test_bundle_is_the_same_bytes_every_time_and_stays_inside() -> None:
    files = {"tasks/0/beam.dat": b"NSTAT 1\n", "tasks/0/run.sh": b"#!/bin/bash\n",
             "array.sbatch": b"#!/bin/bash\n"}
    data = bundle(files)
    assert data == bundle(dict(reversed(files.items())))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert sorted(members) == sorted(files)
        assert members["tasks/0/run.sh"].mode == 0o755
        assert tar.extractfile("tasks/0/beam.dat").read() == b"NSTAT 1\n"  # type: ignore[union-attr]
    for bad in ("/etc/passwd", "tasks/../../x", "tasks//x", "./x"):
        with pytest.raises(ValueError, match="leave the job directory"):
            bundle({bad: b""})


def test_plan_runs_the_direct_platforms_tasks_with_the_clusters_executable() -> None:
    plan = plan_submission(job_id=JOB, cluster=CLUSTER, simulator=ShieldHit(
        CLUSTER.executables["shieldhit"]), input_files=beam(1003), total_primaries=1003,
        ntasks=4, base_seed=99, batch_options={"array_options": {"time": "00:20:00"},
                                               "slurm_options": {"account": "plgx"}})
    assert [t.primaries for t in plan.tasks] == split_primaries(1003, 4)
    assert [t.seed for t in plan.tasks] == [task_seed(99, i) for i in range(4)]
    assert dict(plan.array_options) == {"partition": "plgrid", "time": "00:20:00",
                                        "account": "plgx"}
    assert dict(plan.collect_options) == {"time": "00:10:00", "account": "plgx"}
    with tarfile.open(fileobj=io.BytesIO(plan.bundle)) as tar:
        run = tar.extractfile("tasks/2/run.sh").read().decode()  # type: ignore[union-attr]
        beam_dat = tar.extractfile("tasks/2/beam.dat").read().decode()  # type: ignore[union-attr]
    offset = seed_offset(task_seed(99, 2))
    assert run.splitlines()[-1] == (f"exec /opt/sh12a/bin/shieldhit -N {offset} "
                                    f"/scratch/u/simjobs/{JOB}/tasks/2")
    assert "NSTAT 251" in beam_dat and f"RNDSEED {task_seed(99, 2)}" in beam_dat


def test_plan_refuses_injected_options_and_reserved_file_names() -> None:
    def plan(files: dict[str, str], options: dict[str, object]) -> None:
        plan_submission(job_id=JOB, cluster=CLUSTER, simulator=ShieldHit("sh"),
                        input_files=files, total_primaries=10, ntasks=1, base_seed=1,
                        batch_options=options)

    with pytest.raises(OptionRefused, match=r"batch_options\.collect_header"):
        plan(beam(10), {"collect_header": "#SBATCH --wrap=id"})
    with pytest.raises(BadInput, match="reserved"):
        plan({**beam(10), "run.sh": "echo pwned"}, {})


def test_checksums_catch_a_changed_a_missing_and_an_unchecked_output(tmp_path: Path) -> None:
    (tmp_path / "a.bdo").write_bytes(b"x" * 1000)
    (tmp_path / "b.log").write_text("log\n")
    digest = hashlib.sha256(b"x" * 1000).hexdigest()
    listing = tmp_path / CHECKSUMS
    listing.write_text(f"{digest}  a.bdo\n{hashlib.sha256(b'log' + bytes([10])).hexdigest()}"
                       "  b.log\n")
    assert verify_checksums(tmp_path) == 2
    (tmp_path / "a.bdo").write_bytes(b"x" * 999 + b"y")
    with pytest.raises(ChecksumMismatch, match="changed on its way"):
        verify_checksums(tmp_path)
    (tmp_path / "a.bdo").unlink()
    with pytest.raises(ChecksumMismatch, match="was not downloaded"):
        verify_checksums(tmp_path)
    listing.unlink()
    with pytest.raises(ChecksumMismatch, match="left no"):
        verify_checksums(tmp_path)


def test_end_states_read_as_failure_reasons_with_their_slurm_state() -> None:
    log = b"Primary particle no.  500 ETR: 0 hour(s) 0 minute(s) 1 second(s)\nERROR: boom\n"
    failed = record("7_1|10|7|1|FAILED|NonZeroExitCode|768|1796161100|1796161101|")
    assert failure(failed, log) == ("simulator exited with status 3: ERROR: boom", 3)
    assert platform_state(failed) == {"state": "FAILED", "exit_code": 3, "signal": None}
    killed = record("1_3|1|1|3|FAILED|JobLaunchFailure|9|1796160215|1796160218|")
    assert failure(killed, b"") == ("simulator was killed by signal 9 (SLURM reason "
                                    "JobLaunchFailure)", None)
    timeout = record("7_2|11|7|2|TIMEOUT|TimeLimit|15|1796161100|1796161163|")
    assert failure(timeout, log) == ("time limit reached (SLURM state TIMEOUT)", None)
    assert platform_state(timeout) == {"state": "TIMEOUT", "exit_code": 0, "signal": 15}
    oom = record("9_0|9|9|0|OUT_OF_MEMORY|OutOfMemory|0|1|2|")
    assert failure(oom, b"")[0] == "out of memory (SLURM state OUT_OF_MEMORY)"
    node = record("9_1|9|9|1|NODE_FAIL|NodeDown|0|1|2|")
    assert failure(node, b"")[0] == "node failure (SLURM state NODE_FAIL)"
    cancelled = record("7_3|7|7|3|CANCELLED by 0|None|15|1796161100|1796161104|")
    assert failure(cancelled, b"")[0].startswith("cancelled on the cluster, not by its owner")
    assert platform_state(cancelled)["state"] == "CANCELLED"


def test_progress_is_the_furthest_line_of_a_log_tail() -> None:
    sim = ShieldHit("sh")
    tail = (b"Requested number of primaries NSTAT      :  1000\n"
            b"Primary particle no.        300 ETR:  0 hour(s)  0 minute(s)  7 second(s)\n"
            b"Primary particle no.        400 ETR:  0 hour(s)  1 minute(s)  6 second(s)\n")
    found = progress(sim, tail)
    assert found is not None and (found.simulated, found.eta_seconds) == (400, 66)
    assert progress(sim, b"nothing to see\n") is None
    line = b"Primary particle no. %6d ETR:  0 hour(s)  0 minute(s)  1 second(s)\n"
    first, last = line % 999999, line % 500  # the first as it reads once cut off at its start
    padding = b"#" * (LOG_TAIL_BYTES - len(first) - len(last) - 1) + b"\n"
    assert progress(sim, first + padding + last).simulated == 500  # type: ignore[union-attr]
    assert progress(sim, first + last).simulated == 999999  # type: ignore[union-attr]


def test_a_pending_array_record_stands_for_each_of_its_tasks() -> None:
    seen = tasks_seen([record("1_[0-3]|1|1|0-3|PENDING|None|0|N/A|N/A|"),
                       record("1_2|5|1|2|RUNNING|None|0|10|N/A|")])
    assert sorted(seen) == [0, 1, 2, 3] and seen[2].state == "RUNNING"
