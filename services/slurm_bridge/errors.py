"""The bridge's errors, classified on the class (``retriable``), never by message text.

Caller misuse (a request's SLURM option refused) derives from ValueError; what
the cluster did (SSH refused or lost, a command that failed) derives from
OSError through :class:`RemoteError`. Retry loops look at ``retriable``: a
dropped connection is worth another try, a host key that does not match or a
refused sbatch is not.
"""

from __future__ import annotations

from services.platform.outcome import CompletedProcess


class BridgeError(Exception):
    """Base of the bridge's errors."""

    retriable = False


class OptionRefused(BridgeError, ValueError):
    """A SLURM option of a request is not on the allow-list or its value does not match."""


class RemoteError(BridgeError, OSError):
    """The cluster could not be reached or an SSH/SFTP operation broke off."""

    retriable = True


class HostKeyRejected(RemoteError):
    """The server's host key is not the one in known_hosts: never connect anyway."""

    retriable = False


class LoginRejected(RemoteError):
    """The server refused our key (or the key cannot be read)."""

    retriable = False


class RemoteFileError(RemoteError):
    """The server refused a file operation (permission, no space): not a link failure."""

    retriable = False


class RemoteTimeout(RemoteError, TimeoutError):
    """A remote command ran past its time limit; the output so far is kept."""

    def __init__(self, message: str, output: bytes) -> None:
        super().__init__(message)
        self.output = output


class CommandFailed(BridgeError):
    """A remote command exited non-zero; the error carries its result (stdout, stderr)."""

    def __init__(self, message: str, result: CompletedProcess) -> None:
        super().__init__(message)
        self.result = result


class CommandKilled(CommandFailed):
    """A remote command was killed by a signal: not an answer, so another try may work."""

    retriable = True


class SlurmRefused(CommandFailed):
    """SLURM refused a submission (bad partition, time limit, ...): retrying will not help."""


class OutputError(BridgeError):
    """A command's output is not in the format it was asked for."""
