"""Debian's Chromium for the headless-browser tests, installed when a test first needs it.

Why Debian's package: this machine's network reaches package registries only, so a
browser build that a tool downloads by itself (``playwright install``) cannot be had;
Playwright drives the packaged binary instead (``executable_path``). Like
:mod:`devstack.postgres`, installing needs root (the machines' normal user).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

LOG = logging.getLogger("devstack.chromium")

CHROMIUM = Path("/usr/bin/chromium")

#: How the tests start it: headless, and nothing that reaches for the network by itself.
LAUNCH_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run")


class ChromiumError(RuntimeError):
    """Chromium is not installed and could not be installed."""


def ensure_installed() -> Path:
    """The Chromium binary, installing Debian's ``chromium`` package if it is missing.

    Raises:
        ChromiumError: not root, or apt-get failed (with its output).
    """
    if CHROMIUM.exists():
        return CHROMIUM
    if os.geteuid() != 0:
        raise ChromiumError("Chromium is not installed; run: apt-get install -y chromium")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    lock_wait = ["-o", "DPkg::Lock::Timeout=600"]  # other sessions may be installing too
    for cmd in (["apt-get", *lock_wait, "update"],
                ["apt-get", *lock_wait, "install", "-y", "--no-install-recommends", "chromium"]):
        LOG.info("Running %s", " ".join(cmd))
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ChromiumError(f"{' '.join(cmd)} failed:\n{result.stdout}{result.stderr}")
    found = shutil.which("chromium")
    if not CHROMIUM.exists() and found is None:
        raise ChromiumError("the chromium package is installed but /usr/bin/chromium is missing")
    return CHROMIUM if CHROMIUM.exists() else Path(str(found))
