"""Every Prometheus metric of every service, declared once.

Each service is its own process with its own ``/metrics``, so the process (Prometheus'
``job``/``instance`` labels) says which service a sample comes from; the labels here stay
few and bounded (a route template, never a path; an event type, never a job id).

Names follow Prometheus conventions: counters end in ``_total`` (added by the client),
durations are histograms in seconds.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram
from prometheus_client import generate_latest as _generate_latest
from prometheus_client.metrics import MetricWrapperBase

__all__ = ["CONTENT_TYPE_LATEST", "exposition", "labelled"]


def labelled(metric: MetricWrapperBase) -> Callable[..., Any]:
    """``metric.labels``, remembered per label values, for the paths taken per request.

    ``labels()`` validates and joins its values and takes the metric's lock on every call
    (2 % of the API's CPU at 1,000 submissions/s for three calls a request); the child it
    returns is the same object each time, so it can be kept. The labels are bounded by
    design (see above), and so is the cache.
    """
    return functools.lru_cache(maxsize=4096)(metric.labels)

# --- every service -------------------------------------------------------------------------

EVENTS_PRODUCED = Counter(
    "simjobs_events_produced", "Events written to the log (acknowledged by Kafka)", ["type"])
EVENTS_CONSUMED = Counter(
    "simjobs_events_consumed", "Events read from the log and decoded", ["consumer", "type"])
RECORDS_SKIPPED = Counter(
    "simjobs_records_skipped", "Records a consumer could not read and skipped",
    ["consumer", "reason"])
CONSUMER_LAG = Gauge(
    "simjobs_consumer_lag", "Records in the partition after the consumer's position",
    ["consumer", "topic", "partition"])

# --- API -----------------------------------------------------------------------------------

HTTP_REQUESTS = Counter(
    "simjobs_http_requests", "HTTP requests answered", ["route", "method", "status"])
HTTP_DURATION = Histogram(
    "simjobs_http_request_duration_seconds", "Time to answer an HTTP request",
    ["route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))

# --- projector -----------------------------------------------------------------------------

PROJECTOR_APPLIED = Counter(
    "simjobs_projector_events_applied", "Events folded into the read model")
PROJECTOR_SKIPPED = Counter(
    "simjobs_projector_events_skipped", "Records the projector did not apply, by reason",
    ["reason"])
PROJECTOR_BATCH_DURATION = Histogram(
    "simjobs_projector_batch_duration_seconds", "Time to apply one batch in one transaction")

# --- runner --------------------------------------------------------------------------------

RUNNER_TASKS_RUNNING = Gauge(
    "simjobs_runner_tasks_running", "Simulator processes running now")
RUNNER_TASKS_ENDED = Counter(
    "simjobs_runner_tasks_ended", "Tasks this runner ended, by outcome", ["outcome"])
RUNNER_SIMULATOR_SECONDS = Counter(
    "simjobs_runner_simulator_seconds", "Wall-clock seconds of simulator processes")
RUNNER_SIMULATOR_CPU_SECONDS = Counter(
    "simjobs_runner_simulator_cpu_seconds",
    "CPU seconds (user + system) of simulator processes and their children")

# --- usage accounting (faust worker) -------------------------------------------------------

USAGE_APPLIED = Counter(
    "simjobs_usage_events_applied", "Events counted into the usage table")
USAGE_DUPLICATES = Counter(
    "simjobs_usage_events_duplicate", "Redelivered or repeated events recognised and not counted")

# --- SLURM bridge --------------------------------------------------------------------------

SLURM_ACTIVE_JOBS = Gauge(
    "simjobs_slurm_active_jobs", "Batch jobs the bridge tracks on a cluster now", ["cluster"])
SLURM_SUBMISSIONS = Counter(
    "simjobs_slurm_submissions", "Batch submissions, by outcome (submitted, failed)",
    ["cluster", "outcome"])
SLURM_POLLS = Counter(
    "simjobs_slurm_polls", "Status queries of a cluster, by outcome (ok, failed)",
    ["cluster", "outcome"])
SLURM_POLL_DURATION = Histogram(
    "simjobs_slurm_poll_duration_seconds", "Time of one status query (one SSH round trip)",
    ["cluster"], buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0))
SLURM_ROUND_TRIPS = Counter(
    "simjobs_slurm_round_trips", "SSH round trips to a cluster, by kind (exec, sftp)",
    ["cluster", "kind"])
SLURM_CONNECTS = Counter(
    "simjobs_slurm_connects", "SSH connections opened to a cluster (more than one: it reconnected)",
    ["cluster"])


def exposition() -> bytes:
    """The text exposition of every metric of this process."""
    return _generate_latest(REGISTRY)
