"""The projector with its Prometheus metrics: what the service runs.

A subclass, so the projector's hot path stays as it is and the audit tools (which run
the plain :class:`~services.projector.projector.Projector`) count nothing.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from services.ops.metrics import (
    PROJECTOR_APPLIED,
    PROJECTOR_BATCH_DURATION,
    PROJECTOR_SKIPPED,
)
from services.projector.projector import BatchResult, Decoded, Projector


class MeteredProjector(Projector):
    """Counts events applied and skipped (by reason) and times each batch."""

    async def _apply_decoded(self, decoded: Sequence[Decoded]) -> BatchResult:
        # The one path every batch takes (run() and apply_records() both come here).
        started = time.perf_counter()
        result = await super()._apply_decoded(decoded)
        PROJECTOR_BATCH_DURATION.observe(time.perf_counter() - started)
        PROJECTOR_APPLIED.inc(result.applied)
        for reason, count in result.skipped.items():
            PROJECTOR_SKIPPED.labels(reason).inc(count)
        return result

    @property
    def consumer(self) -> Any:
        """The running consumer (None before start and after stop)."""
        return self._consumer
