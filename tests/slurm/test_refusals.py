"""What the batch platform refuses: injected SLURM options, unknown host keys, sbatch errors.

A refusal must say why, leave no half-made job on the cluster, and (through the API)
answer 400 for bad input, 500 with the reason when SSH or sbatch fails.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncssh
import pytest

from devstack import pick_free_ports
from services.contract.jobs import JobState
from services.settings import KafkaSettings
from tests.api.conftest import Realm, call
from tests.runner.conftest import beam, of_type
from tests.slurm.conftest import (
    ApiBatchStack,
    ClusterSite,
    api_batch_stack,
    bridge_settings,
    cluster_run,
    slurm_jobs_named,
)
from tests.slurm.test_batch import TERMINAL, submit_batch, wait_view

pytestmark = [pytest.mark.slurm, pytest.mark.kafka]

S = JobState

#: One injection attempt per field of batch_options; each must be refused.
INJECTIONS: list[tuple[str, Any]] = [
    ("slurm_options", {"time": "00:10:00 --wrap=id"}),
    ("slurm_options", {"output": "/etc/passwd"}),
    ("array_options", {"partition": "debug\n#SBATCH --wrap=id"}),
    ("array_options", {"account": "$(id)"}),
    ("array_options", {"wrap": "touch /tmp/pwned"}),
    ("collect_options", {"time": "1;id"}),
    ("collect_options", {"mem": "1G`id`"}),
    ("array_header", "#SBATCH --mem=2G\nid > /tmp/pwned"),
    ("array_header", "#SBATCH --time=1 --wrap=id"),
    ("collect_header", "#SBATCH --dependency=afterok:1"),
    ("collect_header", "#SBATCH --chdir=/"),
]


async def nothing_on_the_cluster(stack: ApiBatchStack, site: ClusterSite, job_id: str) -> None:
    assert await slurm_jobs_named(site, f"simjobs-{job_id}") == []
    found = await cluster_run(site, f"test -e {site.config().work_root}/{job_id}; echo $?")
    assert found.stdout_text.strip() == "1", "a job directory was made on the cluster"


@pytest.mark.parametrize(("field", "value"), INJECTIONS)
async def test_injected_options_are_refused_by_the_api(
        field: str, value: Any, tmp_path: Path, kafka_settings: KafkaSettings, realm: Realm,
        cluster_site: ClusterSite) -> None:
    settings = bridge_settings(tmp_path, kafka_settings, cluster_site.config())
    async with api_batch_stack(kafka_settings, tmp_path, realm, settings) as stack:
        session = await stack.api.keycloak_user(realm)
        status, body = await submit_batch(session, beam(100), 1, **{field: value})
        assert status == 400, body
        assert f"batch_options.{field}" in body["message"]
        status, body = await call(session, "GET", "/user/simulations")
        assert body["simulations"] == []


async def test_injected_options_that_bypass_the_api_are_refused_by_the_bridge(
        tmp_path: Path, kafka_settings: KafkaSettings, realm: Realm,
        cluster_site: ClusterSite) -> None:
    settings = bridge_settings(tmp_path, kafka_settings, cluster_site.config())
    async with api_batch_stack(kafka_settings, tmp_path, realm, settings) as stack:
        jobs = {await stack.publish_batch(beam(100), ntasks=1, primaries=100,
                                          batch_options={field: value}): field
                for field, value in INJECTIONS}
        for job_id, field in jobs.items():
            view = await wait_view(stack, job_id, *TERMINAL)
            assert view.state is S.FAILED
            assert view.failure_reason is not None
            assert view.failure_reason.startswith(f"batch_options.{field}")
            failed = of_type(await stack.events(job_id), "BatchSubmitFailed")
            assert failed[0].payload["retriable"] is False
            await nothing_on_the_cluster(stack, cluster_site, job_id)


async def test_unknown_host_key_is_refused_and_answered_with_500(
        tmp_path: Path, kafka_settings: KafkaSettings, realm: Realm,
        cluster_site: ClusterSite) -> None:
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().split()
    known = tmp_path / "known_hosts"
    handle = cluster_site.handle
    known.write_text(f"[{handle.host}]:{handle.ssh_port} {other[0]} {other[1]}\n")
    settings = bridge_settings(tmp_path, kafka_settings,
                               cluster_site.config(known_hosts=known))
    async with api_batch_stack(kafka_settings, tmp_path, realm, settings) as stack:
        session = await stack.api.keycloak_user(realm)
        status, body = await submit_batch(session, beam(100), 1)
        assert status == 500, body
        assert body["message"].startswith("Job submission failed: cluster local: the host "
                                          f"key of {handle.user}@{handle.host}")
        job_id = body["job_id"]
        status, listing = await call(session, "GET", "/user/simulations")
        assert [s["job_id"] for s in listing["simulations"]] == [job_id]
        status, job = await call(session, "GET", f"/jobs/batch?job_id={job_id}")
        assert (status, job["job_state"]) == (200, "FAILED")
        await nothing_on_the_cluster(stack, cluster_site, job_id)
        status, _ = await call(session, "DELETE", f"/user/simulations?job_id={job_id}")
        assert status == 200  # a job that never ran can be cleared away like any ended one
        # The bridge never connected anyway, and did not retry what cannot succeed.
        assert stack.backends["local"].connects == 0


async def test_sbatch_refusal_is_answered_with_500_and_sbatchs_message(
        tmp_path: Path, kafka_settings: KafkaSettings, realm: Realm,
        cluster_site: ClusterSite) -> None:
    settings = bridge_settings(tmp_path, kafka_settings, cluster_site.config())
    async with api_batch_stack(kafka_settings, tmp_path, realm, settings) as stack:
        session = await stack.api.keycloak_user(realm)
        status, body = await submit_batch(session, beam(100), 1,
                                          slurm_options={"partition": "nope"})
        assert status == 500, body
        assert body["message"] == (
            "Job submission failed: sbatch of the array job failed: sbatch: error: invalid "
            "partition specified: nope\nsbatch: error: Batch job submission failed: Invalid "
            "partition name specified")
        assert await slurm_jobs_named(cluster_site, f"simjobs-{body['job_id']}") == []


async def test_unreachable_cluster_is_retried_then_answered_with_500(
        tmp_path: Path, kafka_settings: KafkaSettings, realm: Realm,
        cluster_site: ClusterSite) -> None:
    port = pick_free_ports(1)[0]
    settings = bridge_settings(tmp_path, kafka_settings, cluster_site.config(port=port),
                               submit_deadline=2.0)
    async with api_batch_stack(kafka_settings, tmp_path, realm, settings) as stack:
        session = await stack.api.keycloak_user(realm)
        status, body = await submit_batch(session, beam(100), 1)
        assert status == 500, body
        assert "cannot connect to" in body["message"] and "Connect call failed" in \
            body["message"]
        failed = of_type(await stack.events(body["job_id"]), "BatchSubmitFailed")
        assert failed[0].payload["retriable"] is True
