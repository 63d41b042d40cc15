"""The asyncssh backend against the real sshd: one connection, bounded sessions, clean failures."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from services.slurm_bridge.errors import LoginRejected, RemoteError, RemoteTimeout
from services.slurm_bridge.ssh import AsyncSSHBackend
from tests.slurm.conftest import ClusterSite, client_address, kill_ssh_connection

pytestmark = pytest.mark.slurm


async def test_many_operations_at_once_share_one_connection(cluster_site: ClusterSite) -> None:
    backend = AsyncSSHBackend(cluster_site.config())
    root = f"{cluster_site.root}/ssh-many"
    try:
        await backend.makedirs(root)
        results = await asyncio.gather(
            *(backend.run(f"sleep 0.2; echo {i}", time_limit=60) for i in range(40)),
            *(backend.write_file(f"{root}/{i}.txt", f"file {i}\n".encode())
              for i in range(40)))
        outputs = [r.stdout_text.strip() for r in results if r is not None]
        assert outputs == [str(i) for i in range(40)]
        assert await backend.read_file(f"{root}/39.txt") == b"file 39\n"
        assert await backend.read_file(f"{root}/none.txt") is None
        assert backend.connects == 1
    finally:
        await backend.close()


async def test_exit_status_stdout_and_stderr_come_back_apart(cluster_site: ClusterSite) -> None:
    backend = AsyncSSHBackend(cluster_site.config())
    try:
        done = await backend.run("cat; echo oops >&2; exit 3", input=b"in\n", time_limit=30)
        assert (done.returncode, done.output, done.stderr) == (3, b"in\n", b"oops\n")
        killed = await backend.run("kill -TERM $$", time_limit=30)
        assert killed.signal == 15 and killed.exit_code is None
        with pytest.raises(RemoteTimeout) as caught:
            await backend.run("echo started; sleep 30", time_limit=1)
        assert caught.value.output.startswith(b"started")
    finally:
        await backend.close()


async def test_a_connection_killed_mid_command_is_an_error_and_is_reopened(
        cluster_site: ClusterSite) -> None:
    backend = AsyncSSHBackend(cluster_site.config())
    try:
        command = asyncio.create_task(backend.run("sleep 20", time_limit=60))
        await asyncio.sleep(1.0)
        kill_ssh_connection(cluster_site, client_address(backend))
        with pytest.raises(RemoteError) as caught:
            await command
        assert caught.value.retriable
        done = await backend.run("echo back", time_limit=30)
        assert done.stdout_text == "back\n" and backend.connects == 2
    finally:
        await backend.close()


async def test_a_key_the_server_does_not_know_is_refused_for_good(
        cluster_site: ClusterSite, tmp_path: Path) -> None:
    import asyncssh

    key = tmp_path / "other_key"
    asyncssh.generate_private_key("ssh-ed25519").write_private_key(str(key))
    backend = AsyncSSHBackend(cluster_site.config(private_key=key))
    with pytest.raises(LoginRejected, match="refused the key") as caught:
        await backend.connect()
    assert not caught.value.retriable and backend.connects == 0
