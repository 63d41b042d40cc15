"""Run a single-node SLURM cluster and an OpenSSH server on 127.0.0.1, for the batch platform.

Why: the SLURM bridge talks to clusters over SSH, and its tests must talk to a real
``slurmctld`` through a real ``sshd``, on a machine without systemd or Docker. This module
follows the verified recipe of ``../shared/reference/slurm-local.md``: Debian's packages,
daemons started directly, a configuration without cgroups. Unlike the broker and PostgreSQL,
SLURM and sshd are system daemons (fixed pidfiles in /run, config in /etc), so this needs
root, which is the normal user on these machines. What it owns::

    /etc/slurm/slurm.conf              single node ``localhost``, partition ``debug``
    /etc/ssh/sshd_config_simjobs       sshd on 127.0.0.1:<port>, key logins only
    /run/{munge/munged,slurmctld,slurmd,sshd-simjobs-<port>}.pid
    user ``slurmuser``                 the account jobs are submitted as (key login only)
    <home>/id_ed25519                  the client key (home: ~/.cache/simjobs/slurm)
    <home>/known_hosts                 pins the server's host key (clients verify it)
    <home>/state.json                  port and user, for ``status``

``start`` is idempotent: it installs what is missing, rewrites the configuration only when
it changed (restarting the daemons only then), starts what is not running and resumes a
node left drained by an earlier run. ``stop`` stops the daemons by pidfile. Running jobs
survive a stop and start with an unchanged configuration (their slurmstepd lives on).

Refuses to touch a slurm.conf it did not write: a machine with its own SLURM is not ours.

CLI: ``python -m devstack.slurm {start,stop,status} [--home DIR]``.
"""

from __future__ import annotations

import argparse
import logging
import os
import pwd
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from devstack import (
    HOST,
    file_lock,
    load_state,
    port_is_free,
    process_alive,
    read_pid,
    save_state,
    tail,
)

LOG = logging.getLogger("devstack.slurm")  # stable name, also under `python -m`

ENV_HOME = "SIMJOBS_SLURM_HOME"
ENV_SSH_PORT = "SIMJOBS_SLURM_SSH_PORT"
ENV_USER = "SIMJOBS_SLURM_USER"
DEFAULT_SSH_PORT = 2222
DEFAULT_USER = "slurmuser"
NODE = "localhost"
PARTITION = "debug"
#: Advertised CPU slots: more than the machine's 2 cores is fine (``config_overrides``),
#: so that four array tasks run at once.
CPUS = 4
PACKAGES = {"slurmctld": "/usr/sbin/slurmctld", "slurmd": "/usr/sbin/slurmd",
            "slurm-client": "/usr/bin/sbatch", "munge": "/usr/sbin/munged",
            "openssh-server": "/usr/sbin/sshd"}
CONF_MARK = "# written by devstack/slurm.py"
SLURM_CONF = Path("/etc/slurm/slurm.conf")
SSHD_CONF = Path("/etc/ssh/sshd_config_simjobs")
MUNGE_PID = Path("/run/munge/munged.pid")
SLURMCTLD_PID = Path("/run/slurmctld.pid")
SLURMD_PID = Path("/run/slurmd.pid")
JOBCOMP_LOG = Path("/var/log/slurm/jobcomp.log")
USABLE_NODE_STATES = ("idle", "mixed", "allocated", "completing")


class SlurmError(RuntimeError):
    """SLURM or sshd could not be installed, configured or started."""


@dataclass(frozen=True)
class SlurmHandle:
    """How a client reaches the cluster: the SSH endpoint, its key and pinned host key."""

    host: str
    ssh_port: int
    user: str
    private_key: Path
    known_hosts: Path
    home: Path
    partition: str = PARTITION
    cpus: int = CPUS

    @property
    def user_home(self) -> Path:
        """The submitting user's home directory (the work root lives under it)."""
        return Path(pwd.getpwnam(self.user).pw_dir)

    @property
    def sshd_pid_file(self) -> Path:
        return _sshd_pid_file(self.ssh_port)


def default_home() -> Path:
    """Return the client-side home: $SIMJOBS_SLURM_HOME, else ~/.cache/simjobs/slurm."""
    env = os.environ.get(ENV_HOME)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "simjobs" / "slurm"


def _sshd_pid_file(port: int) -> Path:
    return Path(f"/run/sshd-simjobs-{port}.pid")


def _ssh_port() -> int:
    return int(os.environ.get(ENV_SSH_PORT, str(DEFAULT_SSH_PORT)))


def _user() -> str:
    return os.environ.get(ENV_USER, DEFAULT_USER)


# --- small process helpers -------------------------------------------------------------------


def _run(cmd: Sequence[str], what: str, *, check: bool = True,
         env: dict[str, str] | None = None, input: str | None = None) -> str:
    """Run a short command; raise SlurmError with its output if it fails (and ``check``)."""
    result = subprocess.run(list(cmd), capture_output=True, text=True, check=False, env=env,
                            input=input, stdin=None if input is not None else subprocess.DEVNULL,
                            start_new_session=True)
    if check and result.returncode != 0:
        raise SlurmError(f"{what} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return result.stdout


def _start_daemon(cmd: Sequence[str], what: str, log_file: Path) -> None:
    """Start a daemon that forks itself into the background.

    Its stdio goes to a file, never to a pipe: a daemon that keeps an inherited pipe open
    would make us wait for its end. Its own session keeps our terminal's signals away.
    """
    LOG.info("starting %s", what)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as out:
        result = subprocess.run(list(cmd), stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, check=False, start_new_session=True)
    if result.returncode != 0:
        raise SlurmError(f"{what} did not start ({result.returncode}); "
                         f"last lines of {log_file}:\n{tail(log_file)}")


def _alive(pid_file: Path) -> bool:
    pid = read_pid(pid_file)
    return pid is not None and process_alive(pid)


def _stop_pidfile(pid_file: Path, name: str, timeout: float = 30.0) -> bool:
    """SIGTERM the pidfile's process and wait for the process itself (not the file) to end.

    munged and slurmd delete their pidfile when shutdown starts, and slurmd may need ~10 s
    more (it retries messages to slurmctld); slurmctld cannot delete its root-owned pidfile
    after dropping to user slurm, so the file is removed here.
    """
    pid = read_pid(pid_file)
    if pid is None or not process_alive(pid):
        pid_file.unlink(missing_ok=True)
        return False
    LOG.info("stopping %s (pid %d)", name, pid)
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while process_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if process_alive(pid):
        LOG.warning("%s still running after %.0f s: SIGKILL", name, timeout)
        os.kill(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    return True


def _write_if_changed(path: Path, text: str, mode: int = 0o644) -> bool:
    """Write ``text`` to ``path`` unless it already holds exactly that; True if it changed."""
    try:
        if path.read_text() == text:
            path.chmod(mode)
            return False
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.chmod(mode)
    tmp.replace(path)
    return True


# --- installation ----------------------------------------------------------------------------


def _missing_packages() -> list[str]:
    return [name for name, binary in PACKAGES.items() if not Path(binary).exists()]


def ensure_installed() -> None:
    """Install Debian's SLURM, munge and OpenSSH server packages if any is missing.

    Their postinst scripts create the munge key and the SSH host keys, and try to start the
    services, which a ``policy-rc.d`` that exits 101 refuses: we start the daemons ourselves,
    with our own configuration. One is put in place for the install if the machine has none.
    """
    missing = _missing_packages()
    if not missing:
        return
    if os.geteuid() != 0:
        raise SlurmError(f"SLURM is not installed; run as root: apt-get install "
                         f"--no-install-recommends {' '.join(missing)}")
    policy = Path("/usr/sbin/policy-rc.d")
    own_policy = not policy.exists()
    if own_policy:
        policy.write_text("#!/bin/sh\n# devstack/slurm.py: no service starts during install\n"
                          "exit 101\n")
        policy.chmod(0o755)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # Other sessions on the machine may be running apt too: wait for the lock, do not fail.
    lock_wait = ["-o", "DPkg::Lock::Timeout=600"]
    try:
        LOG.info("apt-get install %s", " ".join(missing))
        _run(["apt-get", *lock_wait, "update", "-qq"], "apt-get update", env=env)
        _run(["apt-get", *lock_wait, "install", "-y", "-qq", "--no-install-recommends",
              *missing], "apt-get install", env=env)
    finally:
        if own_policy:
            policy.unlink(missing_ok=True)
    still = _missing_packages()
    if still:
        raise SlurmError(f"installed, but still missing: {still}")


# --- configuration ---------------------------------------------------------------------------


def slurm_conf(controller_host: str) -> str:
    """slurm.conf for one node on this machine, without cgroups or systemd (see the recipe).

    ``proctrack/pgid`` kills a task's whole process group on cancel; ``MinJobAge=3600``
    keeps finished jobs visible to ``squeue -t all`` for an hour (there is no accounting
    database here, so ``sacct`` does not work); ``sched_interval=2`` starts jobs quickly.
    """
    return f"""{CONF_MARK} -- single node, no cgroups, no systemd
ClusterName=simjobs
SlurmctldHost={controller_host}(127.0.0.1)
SlurmUser=slurm
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/pgid
TaskPlugin=task/none
SwitchType=switch/none
ReturnToService=2
SlurmctldPidFile={SLURMCTLD_PID}
SlurmdPidFile={SLURMD_PID}
SlurmctldPort=6817
SlurmdPort=6818
SlurmdSpoolDir=/var/spool/slurmd
StateSaveLocation=/var/spool/slurmctld
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MinJobAge=3600
SlurmdParameters=config_overrides
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc={JOBCOMP_LOG}
NodeName={NODE} NodeHostname={controller_host} NodeAddr=127.0.0.1 CPUs={CPUS} \
RealMemory=1000 State=UNKNOWN
PartitionName={PARTITION} Nodes={NODE} Default=YES MaxTime=INFINITE State=UP
"""


def sshd_conf(port: int) -> str:
    """An sshd of our own on 127.0.0.1 (key logins only, no PAM: no pam_systemd here)."""
    return f"""{CONF_MARK}
Port {port}
ListenAddress {HOST}
HostKey /etc/ssh/ssh_host_ed25519_key
HostKey /etc/ssh/ssh_host_rsa_key
PidFile {_sshd_pid_file(port)}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
AuthorizedKeysFile .ssh/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
UseDNS no
PrintMotd no
MaxStartups 50:30:100
Subsystem sftp internal-sftp
"""


def _check_owned(path: Path) -> None:
    if path.exists() and not path.read_text().startswith(CONF_MARK):
        raise SlurmError(f"{path} exists and was not written by devstack/slurm.py: this "
                         "machine has its own SLURM set-up, which we must not change")


# --- daemons ---------------------------------------------------------------------------------


def _start_munge(logs: Path) -> None:
    munge = pwd.getpwnam("munge")
    for directory, mode in ((Path("/run/munge"), 0o755), (Path("/etc/munge"), 0o700),
                            (Path("/var/log/munge"), 0o700), (Path("/var/lib/munge"), 0o711)):
        directory.mkdir(parents=True, exist_ok=True)
        os.chown(directory, munge.pw_uid, munge.pw_gid)
        directory.chmod(mode)
    key = Path("/etc/munge/munge.key")
    if not key.exists() or key.stat().st_size == 0:
        _run(["mungekey", "--create", f"--keyfile={key}"], "mungekey")
    os.chown(key, munge.pw_uid, munge.pw_gid)
    key.chmod(0o400)
    if not _alive(MUNGE_PID):
        # --force: start over the socket and lock files a killed munged leaves behind.
        _start_daemon(["runuser", "-u", "munge", "--", "/usr/sbin/munged", "--force"],
                      "munged", logs / "munged.start.log")
    # One round trip; never loop on `munge -n` (each failing call retries for seconds).
    credential = _run(["munge", "-n"], "munge -n")
    _run(["unmunge"], "unmunge (munge round trip)", input=credential)


def _node_state() -> str:
    return _run(["sinfo", "-h", "-n", NODE, "-o", "%T"], "sinfo", check=False).strip()


def _start_slurm(logs: Path) -> None:
    slurm = pwd.getpwnam("slurm")
    for directory in (Path("/var/spool/slurmctld"), Path("/var/log/slurm")):
        directory.mkdir(parents=True, exist_ok=True)
        os.chown(directory, slurm.pw_uid, slurm.pw_gid)
    Path("/var/spool/slurmd").mkdir(parents=True, exist_ok=True)
    _check_owned(SLURM_CONF)
    changed = _write_if_changed(SLURM_CONF, slurm_conf(socket.gethostname().split(".")[0]))
    if changed and (_alive(SLURMCTLD_PID) or _alive(SLURMD_PID)):
        LOG.info("slurm.conf changed: restarting slurmd and slurmctld")
        _stop_pidfile(SLURMD_PID, "slurmd")
        _stop_pidfile(SLURMCTLD_PID, "slurmctld")
    if not _alive(SLURMCTLD_PID):
        _start_daemon(["/usr/sbin/slurmctld"], "slurmctld", logs / "slurmctld.start.log")
    deadline = time.monotonic() + 20
    while "is UP" not in _run(["scontrol", "ping"], "scontrol ping", check=False):
        if time.monotonic() > deadline:
            raise SlurmError("slurmctld does not answer `scontrol ping`:\n"
                             + tail(Path("/var/log/slurm/slurmctld.log")))
        time.sleep(0.2)
    if not _alive(SLURMD_PID):
        _start_daemon(["/usr/sbin/slurmd", "-N", NODE], "slurmd", logs / "slurmd.start.log")
    deadline = time.monotonic() + 30
    while True:
        state = _node_state()
        if state in USABLE_NODE_STATES:
            return
        if "drain" in state or state in ("down", "down*") or state.startswith("inval"):
            # A drain kept in the saved state from an earlier run survives a fixed config.
            LOG.info("node state %r: resuming it", state)
            _run(["scontrol", "update", f"NodeName={NODE}", "State=RESUME"], "resume",
                 check=False)
        if time.monotonic() > deadline:
            raise SlurmError(f"node {NODE} not usable (state {state!r}):\n"
                             + _run(["sinfo", "-N", "-l"], "sinfo", check=False)
                             + tail(Path("/var/log/slurm/slurmd.log"), 20))
        time.sleep(0.2)


def _ensure_user(name: str) -> pwd.struct_passwd:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        _run(["useradd", "-m", "-s", "/bin/bash", name], "useradd")
        entry = pwd.getpwnam(name)
    # useradd leaves the account locked ('!'), which sshd refuses without PAM; '*' means
    # "no password" but unlocked, so only key logins work.
    _run(["usermod", "-p", "*", name], "usermod")
    return entry


def _client_key(home: Path, user: pwd.struct_passwd) -> Path:
    key = home / "id_ed25519"
    if not key.exists():
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "simjobs-tests",
              "-f", str(key)], "ssh-keygen")
    public = (home / "id_ed25519.pub").read_text().strip()
    ssh_dir = Path(user.pw_dir) / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    os.chown(ssh_dir, user.pw_uid, user.pw_gid)
    authorized = ssh_dir / "authorized_keys"
    lines = authorized.read_text().splitlines() if authorized.exists() else []
    if public not in lines:
        with authorized.open("a") as out:
            out.write(public + "\n")
    os.chown(authorized, user.pw_uid, user.pw_gid)
    authorized.chmod(0o600)
    return key


def _start_sshd(port: int, logs: Path) -> None:
    _run(["ssh-keygen", "-A"], "ssh-keygen -A")  # host keys (no-op when present)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation directory
    _check_owned(SSHD_CONF)
    changed = _write_if_changed(SSHD_CONF, sshd_conf(port))
    _run(["/usr/sbin/sshd", "-t", "-f", str(SSHD_CONF)], "sshd -t")
    pid_file = _sshd_pid_file(port)
    if _alive(pid_file):
        if changed:
            os.kill(read_pid(pid_file) or 0, signal.SIGHUP)
        return
    if not port_is_free(port):
        raise SlurmError(f"port {port} is taken by another program; set {ENV_SSH_PORT}")
    _start_daemon(["/usr/sbin/sshd", "-f", str(SSHD_CONF), "-E", str(logs / "sshd.log")],
                  "sshd", logs / "sshd.start.log")


def _known_hosts(home: Path, port: int) -> Path:
    """A known_hosts line for exactly this server's ed25519 host key."""
    kind, key = Path("/etc/ssh/ssh_host_ed25519_key.pub").read_text().split()[:2]
    path = home / "known_hosts"
    _write_if_changed(path, f"[{HOST}]:{port} {kind} {key}\n")
    return path


def _smoke_test(handle: SlurmHandle) -> None:
    """One key login that runs sinfo: the whole chain works, as a client will use it."""
    deadline = time.monotonic() + 20
    while True:
        result = subprocess.run(
            ["ssh", "-i", str(handle.private_key), "-p", str(handle.ssh_port),
             "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={handle.known_hosts}",
             "-o", "StrictHostKeyChecking=yes", "-o", "LogLevel=ERROR",
             f"{handle.user}@{handle.host}", "sinfo -h -o %T"],
            capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL)
        if result.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise SlurmError(f"ssh to {handle.user}@{handle.host}:{handle.ssh_port} failed: "
                             f"{result.stderr.strip()}")
        time.sleep(0.2)


# --- public API ------------------------------------------------------------------------------


def start(home: Path | None = None) -> SlurmHandle:
    """Install (if needed), configure and start SLURM, munge and sshd; return how to connect.

    Raises:
        SlurmError: not root, a package cannot be installed, or a daemon does not come up.
    """
    home = (home or default_home()).expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    home.chmod(0o700)
    logs = home / "logs"
    port, user_name = _ssh_port(), _user()
    with file_lock(home / "slurm.lock"):
        if os.geteuid() != 0:
            raise SlurmError("the local SLURM cluster needs root (system daemons in /run)")
        started = time.monotonic()
        ensure_installed()
        _start_munge(logs)
        _start_slurm(logs)
        user = _ensure_user(user_name)
        key = _client_key(home, user)
        _start_sshd(port, logs)
        handle = SlurmHandle(HOST, port, user_name, key, _known_hosts(home, port), home)
        _smoke_test(handle)
        save_state(home / "state.json", {"ssh_port": port, "user": user_name})
        LOG.info("SLURM and sshd ready in %.1f s: ssh -i %s -p %d %s@%s",
                 time.monotonic() - started, key, port, user_name, HOST)
        return handle


def status(home: Path | None = None) -> SlurmHandle | None:
    """The running cluster's handle, or None if any of its daemons is down."""
    home = (home or default_home()).expanduser().resolve()
    state = load_state(home / "state.json")
    port = state.get("ssh_port")
    user = state.get("user")
    if not isinstance(port, int) or not isinstance(user, str):
        return None
    daemons = (MUNGE_PID, SLURMCTLD_PID, SLURMD_PID, _sshd_pid_file(port))
    if not all(_alive(p) for p in daemons):
        return None
    return SlurmHandle(HOST, port, user, home / "id_ed25519", home / "known_hosts", home)


def stop(home: Path | None = None) -> bool:
    """Stop sshd, slurmd, slurmctld and munged (by their pidfiles); True if any ran.

    Only daemons of a set-up this module wrote are touched.
    """
    home = (home or default_home()).expanduser().resolve()
    if not SLURM_CONF.exists() or not SLURM_CONF.read_text().startswith(CONF_MARK):
        return False
    state = load_state(home / "state.json")
    saved = state.get("ssh_port")
    port = saved if isinstance(saved, int) else _ssh_port()
    with file_lock(home / "slurm.lock"):
        stopped = [
            _stop_pidfile(_sshd_pid_file(port), "sshd"),
            _stop_pidfile(SLURMD_PID, "slurmd"),  # before slurmctld, which it reports to
            _stop_pidfile(SLURMCTLD_PID, "slurmctld"),
            _stop_pidfile(MUNGE_PID, "munged"),
        ]
    return any(stopped)


def main(argv: list[str] | None = None) -> int:
    """``python -m devstack.slurm {start,stop,status}``."""
    parser = argparse.ArgumentParser(prog="devstack.slurm", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["start", "stop", "status"])
    parser.add_argument("--home", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.command == "start":
        handle = start(args.home)
        print(f"ssh -i {handle.private_key} -o UserKnownHostsFile={handle.known_hosts} "
              f"-p {handle.ssh_port} {handle.user}@{handle.host}")
        return 0
    if args.command == "stop":
        print("stopped" if stop(args.home) else "was not running")
        return 0
    running = status(args.home)
    print(f"running: {running.user}@{running.host}:{running.ssh_port}" if running
          else "stopped")
    return 0 if running else 1


if __name__ == "__main__":
    sys.exit(main())
