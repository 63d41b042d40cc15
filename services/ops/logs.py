"""The one logging set-up of every entry point: JSON lines by default, text when asked.

A log line about a job carries a ``job_id`` field. Code says which job a line is about
either per call (``log.info(..., extra={"job_id": job_id})``) or for a whole stretch of
work with :func:`job_context`, which every line logged inside it (in the same task, and
in tasks started from it) inherits.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
import time
from collections.abc import Iterator
from typing import Any, TextIO

from services.contract import jsonio
from services.settings import LogSettings, load_log_settings

_JOB_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("job_id", default=None)

#: Attributes every ``LogRecord`` has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName"}


@contextlib.contextmanager
def job_context(job_id: str | None) -> Iterator[None]:
    """Every line logged inside (this task and the tasks it starts) names ``job_id``."""
    token = _JOB_ID.set(job_id)
    try:
        yield
    finally:
        _JOB_ID.reset(token)


class _JobIdFilter(logging.Filter):
    """Puts the context's job id on records that do not name one themselves."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "job_id", None) is None:
            record.job_id = _JOB_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, service, job_id, extras."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service
        #: The formatted second of the last line: the API logs hundreds a second.
        self._second = -1
        self._second_text = ""

    def _time(self, created: float) -> str:
        """``created`` as ISO 8601 UTC with milliseconds, as ``datetime`` writes it.

        That is: rounded to the microsecond first, then cut to the millisecond.
        """
        second = int(created)
        millis = round((created - second) * 1e6) // 1000
        if millis == 1000:
            second, millis = second + 1, 0
        if second != self._second:
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._second_text}.{millis:03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": self._time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "service": self.service,
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key[0] != "_":
                line[key] = value
        if line.get("job_id") is None:
            line.pop("job_id", None)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return jsonio.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    """For people: ``time level logger [job]: message``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(job)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        job = getattr(record, "job_id", None)
        record.job = f" [{job}]" if job else ""
        return super().format(record)


def setup_logging(service: str, settings: LogSettings | None = None,
                  stream: TextIO | None = None) -> None:
    """Configure the root logger of a service process (replaces earlier handlers).

    Records are made without the caller's file, line and function, thread and process
    (the logging HOWTO's "Optimization"): neither format writes them, and finding the
    caller walks the stack on every line, a sixth of an access line's 30-39 us.

    Raises:
        ValueError: the configured level or format is not one of the known ones.
    """
    settings = settings or load_log_settings()
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(_JobIdFilter())
    handler.setFormatter(JsonFormatter(service) if settings.format == "json"
                         else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.level)
    for noisy in ("aiokafka", "faust", "mode"):
        logging.getLogger(noisy).setLevel(max(settings.level, logging.WARNING))
