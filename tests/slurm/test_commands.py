"""SLURM command builders and parsers, offline, against outputs captured from a real SLURM.

Every constant below was printed by SLURM 22.05.8 on the cluster ``devstack/slurm.py``
starts (the status command as :func:`build_status_command` builds it, run over SSH).
Field order of squeue's lines: JobArrayID|JobID|ArrayJobID|ArrayTaskID|State|Reason|
exit_code (raw wait status)|StartTime|EndTime| (epoch seconds, SLURM_TIME_FORMAT=%s).
"""

from __future__ import annotations

import base64

import pytest

from services.platform.outcome import CompletedProcess
from services.slurm_bridge.commands import (
    LOG_TAIL_BYTES,
    Phase,
    SubmittedIds,
    build_scancel_command,
    build_status_command,
    parse_ids_file,
    parse_scancel,
    parse_squeue_line,
    parse_status,
    parse_submit,
    phase,
    status_input,
)
from services.slurm_bridge.errors import CommandFailed, CommandKilled, OutputError, SlurmRefused

#: An array 7 (0 completed, 1 exited 3, 2 over its 1-minute limit, 3 cancelled while
#: running) and a held, unsplit array 8; then the log tail of task 1.
STATUS_MIXED = (
    "7_3|7|7|3|CANCELLED|None|15|1796161100|1796161104|\n"
    "7_0|9|7|0|COMPLETED|None|0|1796161100|1796161101|\n"
    "7_1|10|7|1|FAILED|NonZeroExitCode|768|1796161100|1796161101|\n"
    "8_[0-2]|8|8|0-2|PENDING|JobHeldUser|0|N/A|N/A|\n"
    "7_2|11|7|2|TIMEOUT|TimeLimit|15|1796161100|1796161163|\n"
    "@@squeue 0\n"
    "@@log UHJpbWFyeSBwYXJ0aWNsZSBuby4gICAgICAgIDUwMCBFVFI6ICAwIGhvdXIocykgIDAgbWludXRlKHMpICAx"
    "IHNlY29uZChzKQpFUlJPUjogYm9vbQo= /home/slurmuser/cap/logs/1.out\n"
)
#: A finished array (1: two completed, one exited 7, one killed by signal 9), its collect
#: job 2, and a throttled array 6 (--array=0-5%2) cancelled while held.
STATUS_FINISHED = (
    "6_[0-5%2]|6|6|0-5%2|CANCELLED|JobHeldUser|0|1796160229|1796160229|\n"
    "1_0|3|1|0|COMPLETED|None|0|1796160215|1796160218|\n"
    "1_1|4|1|1|COMPLETED|None|0|1796160215|1796160218|\n"
    "2|2|2|N/A|COMPLETED|None|0|1796160219|1796160219|\n"
    "1_2|5|1|2|FAILED|NonZeroExitCode|1792|1796160215|1796160218|\n"
    "1_3|1|1|3|FAILED|JobLaunchFailure|9|1796160215|1796160218|\n"
    "@@squeue 0\n"
    "@@log c3RhcnQgMAo= /home/slurmuser/x/logs/0.out\n"
    "@@log  /nope\n"
)
#: A pending array before it was split, with its dependent collect job.
STATUS_PENDING = (
    "1_[0-3]|1|1|0-3|PENDING|None|0|N/A|N/A|\n"
    "2|2|2|N/A|PENDING|Dependency|0|N/A|N/A|\n"
    "@@squeue 0\n"
)
#: `squeue --jobs=999999,999999`: unknown ids in a list are omitted (rc 0).
STATUS_UNKNOWN = "@@squeue 0\n"
#: slurmctld down (from ../shared/reference/slurm-local.md, verbatim), after ~9 s.
CONTROLLER_DOWN_STDERR = ("slurm_load_jobs error: Unable to contact slurm controller "
                          "(connect failure)\n")
SBATCH_BAD_PARTITION = ("sbatch: error: invalid partition specified: nope\n"
                        "sbatch: error: Batch job submission failed: Invalid partition name "
                        "specified\n")
SBATCH_BAD_TIME = "sbatch: error: Invalid --time specification\n"


def done(stdout: str, returncode: int = 0, stderr: str = "") -> CompletedProcess:
    return CompletedProcess(argv=("status",), returncode=returncode, output=stdout.encode(),
                            stderr=stderr.encode(), wall_seconds=0.01)


def test_mixed_status_counts_and_fields() -> None:
    snapshot = parse_status(done(STATUS_MIXED))
    states = [r.state for r in snapshot.records]
    assert states.count("PENDING") == 1 and states.count("TIMEOUT") == 1
    by_id = {r.job_array_id: r for r in snapshot.records}
    failed = by_id["7_1"]
    assert (failed.job_id, failed.array_job_id, failed.task_indices) == ("10", "7", (1,))
    assert (failed.exit_code, failed.signal, failed.phase) == (3, None, Phase.FAILED)
    timeout = by_id["7_2"]
    assert (timeout.exit_code, timeout.signal, timeout.reason) == (0, 15, "TimeLimit")
    assert (timeout.start, timeout.end) == (1796161100, 1796161163)
    cancelled = by_id["7_3"]
    assert cancelled.phase is Phase.CANCELLED and cancelled.job_id == cancelled.array_job_id
    held = by_id["8_[0-2]"]
    assert held.task_indices == (0, 1, 2) and held.start is None and held.end is None
    assert [r.job_array_id for r in snapshot.of_job("7")] == ["7_3", "7_0", "7_1", "7_2"]
    assert snapshot.logs["/home/slurmuser/cap/logs/1.out"].endswith(b"ERROR: boom\n")


def test_finished_status_with_signal_collect_job_and_missing_log() -> None:
    snapshot = parse_status(done(STATUS_FINISHED))
    by_id = {r.job_array_id: r for r in snapshot.records}
    assert (by_id["1_2"].exit_code, by_id["1_2"].signal) == (7, None)
    assert (by_id["1_3"].exit_code, by_id["1_3"].signal) == (0, 9)
    assert by_id["2"].task_indices == () and snapshot.of_job("2") == [by_id["2"]]
    assert by_id["6_[0-5%2]"].task_indices == (0, 1, 2, 3, 4, 5)
    assert snapshot.logs == {"/home/slurmuser/x/logs/0.out": b"start 0\n", "/nope": b""}


def test_pending_unsplit_array_stands_for_every_task() -> None:
    snapshot = parse_status(done(STATUS_PENDING))
    array = snapshot.of_job("1")
    assert len(array) == 1 and array[0].task_indices == (0, 1, 2, 3)
    assert snapshot.of_job("2")[0].reason == "Dependency"


def test_unknown_jobs_give_no_records() -> None:
    snapshot = parse_status(done(STATUS_UNKNOWN))
    assert snapshot.records == () and snapshot.logs == {}


def test_controller_down_is_a_command_failure_not_an_empty_queue() -> None:
    with pytest.raises(CommandFailed, match=r"squeue failed \(exit 1\): slurm_load_jobs error"):
        parse_status(done("@@squeue 1\n", stderr=CONTROLLER_DOWN_STDERR))
    with pytest.raises(CommandFailed, match="printed no squeue result"):
        parse_status(done("", returncode=127, stderr="bash: squeue: command not found\n"))


@pytest.mark.parametrize("line", [
    "7_1|10|7|1|FAILED|NonZeroExitCode|768|1796161100|",  # a field short
    "7_1|10|7|1|FAILED|NonZeroExitCode|768|1796161100|1796161101",  # no closing |
    "7_1|10|7|x|FAILED|NonZeroExitCode|768|1796161100|1796161101|",  # bad index
    "7_1|10|7|1|FAILED|NonZeroExitCode|lots|1796161100|1796161101|",  # bad status
    "7_1|10|7|1|FAILED|NonZeroExitCode|768|1796161100|1796161101|extra|",
])
def test_malformed_squeue_lines_are_refused(line: str) -> None:
    with pytest.raises(OutputError):
        parse_squeue_line(line)


def test_noise_after_the_marker_is_refused() -> None:
    with pytest.raises(OutputError, match="unexpected line"):
        parse_status(done("@@squeue 0\nstray output\n"))
    with pytest.raises(OutputError, match="not base64"):
        parse_status(done("@@squeue 0\n@@log %%%% /x\n"))


@pytest.mark.parametrize(("text", "indices"), [
    ("3", (3,)), ("0-3", (0, 1, 2, 3)), ("0-5%2", (0, 1, 2, 3, 4, 5)),
    ("1,3,5-7", (1, 3, 5, 6, 7)), ("0-6:2", (0, 2, 4, 6)), ("N/A", ()),
])
def test_array_task_ranges(text: str, indices: tuple[int, ...]) -> None:
    line = f"9_[{text}]|9|9|{text}|PENDING|None|0|N/A|N/A|"
    assert parse_squeue_line(line).task_indices == indices


@pytest.mark.parametrize(("state", "expected"), [
    ("PENDING", Phase.PENDING), ("CONFIGURING", Phase.PENDING), ("REQUEUED", Phase.PENDING),
    ("RUNNING", Phase.RUNNING), ("COMPLETING", Phase.RUNNING), ("SUSPENDED", Phase.RUNNING),
    ("COMPLETED", Phase.COMPLETED), ("FAILED", Phase.FAILED), ("TIMEOUT", Phase.FAILED),
    ("OUT_OF_MEMORY", Phase.FAILED), ("NODE_FAIL", Phase.FAILED), ("PREEMPTED", Phase.FAILED),
    ("CANCELLED", Phase.CANCELLED), ("CANCELLED by 1001", Phase.CANCELLED),
    ("WEIRD_NEW_STATE", Phase.UNDETERMINED), ("", Phase.UNDETERMINED),
])
def test_state_mapping(state: str, expected: Phase) -> None:
    assert phase(state) is expected


def test_status_command_is_one_squeue_for_all_ids_and_reads_logs_from_stdin() -> None:
    command = build_status_command(["12", "3", "12", "7"])
    assert command.count("squeue --") == 1 and "--jobs=3,7,12 " in command
    assert "SLURM_TIME_FORMAT=%s" in command and "--noheader --states=all" in command
    assert f"tail -c {LOG_TAIL_BYTES}" in command and "base64 -w0" in command
    assert "--jobs=5,5 " in build_status_command(["5"])  # one id: given twice (see docstring)
    assert status_input(["/a/logs/0.out", "/a/logs/1.out"]) == b"/a/logs/0.out\n/a/logs/1.out\n"
    with pytest.raises(ValueError):
        status_input(["/a\n/b"])


@pytest.mark.parametrize("bad", [["12;id"], ["1 2"], [""], [], ["$(id)"], ["-1"]])
def test_commands_refuse_ids_that_are_not_job_numbers(bad: list[str]) -> None:
    with pytest.raises(ValueError):
        build_status_command(bad)
    with pytest.raises(ValueError):
        build_scancel_command(bad)


def test_scancel() -> None:
    assert build_scancel_command(["40", "39"]) == "scancel 39 40"
    parse_scancel(done(""))
    with pytest.raises(CommandFailed, match="Access/permission denied"):
        parse_scancel(done("", 210, "scancel: error: Kill job error on job id 18: "
                                   "Access/permission denied\n"))


def test_submit_output() -> None:
    assert parse_submit(done("array=41 collect=42\n")) == SubmittedIds("41", "42")
    assert parse_ids_file("array=41 collect=42\n") == SubmittedIds("41", "42")
    assert parse_ids_file("") is None
    with pytest.raises(SlurmRefused, match="sbatch of the array job failed: sbatch: error: "
                                           "invalid partition specified: nope"):
        parse_submit(done("", 92, SBATCH_BAD_PARTITION))
    with pytest.raises(SlurmRefused, match=r"sbatch of the collect job failed: .*--time"):
        parse_submit(done("", 93, SBATCH_BAD_TIME))
    with pytest.raises(OutputError):
        parse_submit(done("Submitted batch job 4\n"))


def test_log_tails_survive_anything_a_simulator_prints() -> None:
    nasty = b"@@squeue 1\n@@log x /y\n\x00\xff binary\n"
    line = f"@@log {base64.b64encode(nasty).decode()} /w/logs/0.out\n"
    assert parse_status(done("@@squeue 0\n" + line)).logs["/w/logs/0.out"] == nasty


def test_a_killed_submit_script_is_worth_another_try() -> None:
    killed = CompletedProcess(argv=("submit",), returncode=-9, output=b"", wall_seconds=0.1)
    with pytest.raises(CommandKilled, match="killed by signal 9") as caught:
        parse_submit(killed)
    assert caught.value.retriable
