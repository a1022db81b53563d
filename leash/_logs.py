"""Log lines on stderr, for the broker and the worker alike: one line per
event, which journald, a container runtime or a terminal collects (neither
rotates files).

``text`` lines read ``2026-12-01 19:33:44,552 INFO leash: listening on ...``;
``json`` lines are one object each, for log pipelines::

    {"time":"2026-12-01T19:33:44.552Z","level":"info","logger":"leash","message":"..."}

with ``"error"`` (the exception and its traceback) when a line carries one,
and the job a worker's line is about (``job_id``, ``job_type``,
``job_attempt``, and ``duration_s`` when it ended) when it has one.
"""

import logging
import sys
import time

import msgspec

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_FORMATS = ("text", "json")
JOB_FIELDS = ("job_id", "job_type", "job_attempt", "duration_s")  # record attributes, if set
NO_JOB = "-"  # a job field of a line outside a job (a logging context's placeholder)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        seconds = int(record.created)
        millis = int((record.created - seconds) * 1000)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        line: dict[str, object] = {
            "time": f"{stamp}.{millis:03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in JOB_FIELDS:
            value = getattr(record, name, NO_JOB)
            if value != NO_JOB:
                line[name] = value
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return msgspec.json.encode(line).decode()


def setup(level: str, format: str) -> None:
    """Send log lines of ``level`` and above to stderr, as ``text`` or ``json``
    (unless logging is set up already, as under a test runner)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if format == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler])
