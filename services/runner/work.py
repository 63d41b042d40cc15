"""Work items: what the coordinator puts on the tasks topic for the workers.

A work item is not an event (it is an instruction to a runner, not a fact
about the job), so it is plain JSON with its own small version field. The
record key is the job id, but the partition is chosen explicitly: with the
key's hash, every task of a job would land in one partition and so on one
runner, while a 100-task job must use every runner. Tasks of one job go to
consecutive partitions starting at a job-dependent one.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import asdict, dataclass
from typing import Any

WORK_ITEM_VERSION = 1


class BadWorkItem(ValueError):
    """A tasks-topic record that is not a work item this runner understands."""


@dataclass(frozen=True)
class WorkItem:
    """Run task ``task_index`` of ``job_id`` with ``primaries`` and ``seed``."""

    job_id: str
    task_index: int
    primaries: int
    seed: int
    sim_type: str
    input_ref: str
    #: The JobSubmitted event id, so task events can name their cause.
    correlation_id: str | None = None

    def encode(self) -> bytes:
        return json.dumps({"v": WORK_ITEM_VERSION, **asdict(self)}, sort_keys=True,
                          separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes | None) -> WorkItem:
        """Parse a record value.

        Raises:
            BadWorkItem: not JSON, another version, or a field missing or of the wrong type.
        """
        try:
            data: Any = json.loads(raw or b"")
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BadWorkItem(f"work item is not JSON: {exc}") from exc
        if not isinstance(data, dict) or data.get("v") != WORK_ITEM_VERSION:
            raise BadWorkItem("work item is not a version-1 object")
        try:
            item = cls(job_id=data["job_id"], task_index=data["task_index"],
                       primaries=data["primaries"], seed=data["seed"],
                       sim_type=data["sim_type"], input_ref=data["input_ref"],
                       correlation_id=data.get("correlation_id"))
        except KeyError as exc:
            raise BadWorkItem(f"work item has no {exc.args[0]!r}") from exc
        ints = (item.task_index, item.primaries, item.seed)
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in ints):
            raise BadWorkItem("work item numbers must be non-negative integers")
        if not all(isinstance(v, str) and v for v in (item.job_id, item.sim_type,
                                                       item.input_ref)):
            raise BadWorkItem("work item job_id, sim_type and input_ref must be strings")
        return item


def task_partition(job_id: str, task_index: int, partitions: int) -> int:
    """The tasks-topic partition of one task (spreads a job over every partition)."""
    return (zlib.crc32(job_id.encode()) + task_index) % partitions
