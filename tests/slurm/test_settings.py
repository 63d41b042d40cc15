"""SIMJOBS_CLUSTERS: names are enough for the API, the bridge needs the connection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.settings import load_api_settings, load_slurm_bridge_settings

FULL = {"name": "ares", "host": "ares.example", "port": 2222, "user": "plgu",
        "private_key": "~/k", "known_hosts": "/etc/kh", "work_root": "/scratch/u/",
        "setup": ["module load sh"], "executables": {"shieldhit": "shieldhit"},
        "array_options": {"time": "00:59:59", "mem": 2000}, "poll_interval": 2}


def test_a_name_is_enough_for_the_api_but_not_for_the_bridge(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIMJOBS_CLUSTERS", json.dumps([{"name": "ares"}]))
    assert [c.name for c in load_api_settings().clusters] == ["ares"]
    with pytest.raises(ValueError, match="cluster 'ares' needs 'host', 'user', 'private_key', "
                                         "'known_hosts', 'work_root' for the SLURM bridge"):
        load_slurm_bridge_settings()


def test_a_full_cluster_is_read_with_its_types(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIMJOBS_CLUSTERS", json.dumps([FULL]))
    cluster, = load_slurm_bridge_settings().clusters
    assert (cluster.host, cluster.port, cluster.user) == ("ares.example", 2222, "plgu")
    assert cluster.private_key == Path("~/k").expanduser()
    assert cluster.work_root == "/scratch/u" and cluster.setup == ("module load sh",)
    assert dict(cluster.array_options) == {"time": "00:59:59", "mem": "2000"}
    assert (cluster.poll_interval, cluster.max_sessions) == (2.0, 6)


@pytest.mark.parametrize(("change", "message"), [
    ({"hostname": "x"}, "unknown keys"), ({"port": 0}, "TCP port"),
    ({"work_root": "scratch"}, "absolute path"), ({"setup": "module load"}, "list of"),
    ({"executables": {"shieldhit": 1.5}}, "object of strings"),
    ({"poll_interval": 0}, "poll_interval"), ({"user": ""}, "non-empty string"),
])
def test_a_bad_cluster_entry_says_what_is_wrong(monkeypatch: pytest.MonkeyPatch,
                                                change: dict[str, object], message: str) -> None:
    monkeypatch.setenv("SIMJOBS_CLUSTERS", json.dumps([{**FULL, **change}]))
    with pytest.raises(ValueError, match=message):
        load_slurm_bridge_settings()


def test_cluster_names_are_unique(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIMJOBS_CLUSTERS", json.dumps([FULL, FULL]))
    with pytest.raises(ValueError, match="unique"):
        load_api_settings()
