"""Structured JSON logs that carry the trace id. Callers log identifiers and outcomes, never PII:
no request bodies, names, phone numbers or e-mail addresses are passed to a logger, and an
exception is logged by its type and frames, never its message.

Other libraries' records keep their logger, level and exception type but not their text: grpc, for
one, quotes a malformed header verbatim ("Invalid encoding on b'Bearer <the internal token>'"), and
no library promises not to quote request data."""

import json
import logging
import sys
import time
import traceback

from opentelemetry import trace

# Whose messages are written as they are: ours, and Alembic's (it never sees a request).
OWN_LOGGERS = ("loyalty", "tests", "alembic")
WITHHELD = "(a library's message, withheld: it may quote request data)"


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage() if record.name.startswith(OWN_LOGGERS) else WITHHELD,
        }
        if getattr(record, "trace_id", None):
            entry["trace_id"] = record.trace_id
            entry["span_id"] = record.span_id
        entry.update(getattr(record, "fields", {}))
        if record.exc_info and record.exc_info[0] is not None:
            # Where it failed, not what the exception says: a message can quote personal data.
            entry["error_type"] = record.exc_info[0].__name__
            entry["stack"] = [
                f"{frame.filename}:{frame.lineno} in {frame.name}"
                for frame in traceback.extract_tb(record.exc_info[2])
            ]
        return json.dumps(entry, default=str)


def install_trace_context() -> None:
    """Stamp every log record with the trace and span of the code that created it, so any handler,
    however late it formats, writes the right ids."""
    create = logging.getLogRecordFactory()
    if getattr(create, "stamps_trace_context", False):
        return

    def create_with_trace(*args, **kwargs) -> logging.LogRecord:
        record = create(*args, **kwargs)
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            record.trace_id = format(span_context.trace_id, "032x")
            record.span_id = format(span_context.span_id, "016x")
        return record

    create_with_trace.stamps_trace_context = True
    logging.setLogRecordFactory(create_with_trace)


def configure_logging(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
