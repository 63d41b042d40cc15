"""devstack/slurm.py: idempotent start, the pinned host key, and a usable node."""

from __future__ import annotations

import subprocess

import pytest

from devstack import read_pid, slurm

pytestmark = pytest.mark.slurm


def test_start_again_changes_nothing_that_runs(slurm_cluster: slurm.SlurmHandle) -> None:
    pids = [read_pid(p) for p in (slurm.MUNGE_PID, slurm.SLURMCTLD_PID, slurm.SLURMD_PID,
                                  slurm_cluster.sshd_pid_file)]
    assert all(pids)
    again = slurm.start()
    assert again == slurm_cluster
    assert [read_pid(p) for p in (slurm.MUNGE_PID, slurm.SLURMCTLD_PID, slurm.SLURMD_PID,
                                  slurm_cluster.sshd_pid_file)] == pids
    assert slurm.status() == slurm_cluster


def test_strict_ssh_login_runs_slurm_commands(slurm_cluster: slurm.SlurmHandle) -> None:
    done = subprocess.run(
        ["ssh", "-i", str(slurm_cluster.private_key), "-p", str(slurm_cluster.ssh_port),
         "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
         "-o", f"UserKnownHostsFile={slurm_cluster.known_hosts}",
         f"{slurm_cluster.user}@{slurm_cluster.host}", "sinfo -h -N -o '%N|%c|%P'"],
        capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [f"localhost|{slurm.CPUS}|{slurm.PARTITION}*"]
