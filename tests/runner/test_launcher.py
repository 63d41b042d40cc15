"""The simulator launcher: CPU time measured by the process that reaps the simulator."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest

from services.platform.outcome import CompletedProcess
from services.runner.process import SimProcess

BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < {s}: pass\n"


async def run(argv: list[str], tmp_path: Path) -> CompletedProcess:
    process = SimProcess("job-1", 0, argv, tmp_path)
    await process.start()

    async def ignore(line: str) -> None:
        return None

    return await process.wait(ignore, time_limit=30, grace=2)


async def test_cpu_seconds_of_a_busy_simulator(tmp_path: Path) -> None:
    done = await run([sys.executable, "-c", BURN.format(s=0.4)], tmp_path)
    assert done.returncode == 0
    assert done.cpu_seconds is not None
    assert 0.4 <= done.cpu_seconds <= done.wall_seconds + 0.05


async def test_cpu_seconds_include_children_the_simulator_reaped(tmp_path: Path) -> None:
    script = ("import subprocess, sys\n"
              f"subprocess.run([sys.executable, '-c', {BURN.format(s=0.3)!r}], check=True)\n")
    done = await run([sys.executable, "-c", script], tmp_path)
    assert done.cpu_seconds is not None and done.cpu_seconds >= 0.3


async def test_a_sleeping_simulator_uses_little_cpu(tmp_path: Path) -> None:
    done = await run([sys.executable, "-c", "import time; time.sleep(0.5)"], tmp_path)
    assert done.wall_seconds >= 0.5
    assert done.cpu_seconds is not None and done.cpu_seconds < 0.25


async def test_exit_status_and_signal_are_the_simulators(tmp_path: Path) -> None:
    done = await run([sys.executable, "-c", "raise SystemExit(3)"], tmp_path)
    assert done.exit_code == 3 and done.signal is None
    done = await run([sys.executable, "-c", "import os, signal; "
                         "os.kill(os.getpid(), signal.SIGTERM)"], tmp_path)
    assert done.signal == signal.SIGTERM and done.exit_code is None
    assert done.cpu_seconds is not None


async def test_a_missing_executable_cannot_start(tmp_path: Path) -> None:
    process = SimProcess("job-1", 0, [str(tmp_path / "no-such-simulator")], tmp_path)
    with pytest.raises(OSError, match="no-such-simulator"):
        await process.start()
