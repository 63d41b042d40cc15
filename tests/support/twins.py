"""Direct twins: the same job run again, undisturbed, as the reference for its results.

A twin has the job's input, primaries, task count and base seed, so every task gets the
same seed and the stand-in simulators write the same outputs: its merged result is what
the job must give when no fault touches it. It runs on the direct platform (local runner),
whatever platform the original ran on.
"""

from __future__ import annotations

from services.api.jobs import new_job_id
from services.contract.envelope import Event


def direct_twin(submitted: Event) -> Event:
    """A JobSubmitted for the twin of the job ``submitted`` started."""
    payload = {k: v for k, v in submitted.payload.items() if k != "batch_options"}
    return Event(type="JobSubmitted", job_id=new_job_id("direct"), producer="test",
                 payload={**payload, "platform": "direct", "title": f"twin of {submitted.job_id}"})
