"""JSON log lines carrying the unified context (request, merchant and object ids)."""
from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone

from app import context


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **{k: getattr(record, k) for k in CONTEXT_FIELDS if getattr(record, k, None)},
        }
        for key in ("event", "status", "path", "method", "duration_ms", "channel", "job_id", "issues"):
            if hasattr(record, key):
                line[key] = getattr(record, key)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


CONTEXT_FIELDS = ("request_id", "merchant_id", "object_id")
_base_factory = logging.getLogRecordFactory()


def _record_with_context(*args, **kwargs) -> logging.LogRecord:
    """Every log record is stamped with the unified context when it is created."""
    record = _base_factory(*args, **kwargs)
    for key, value in context.snapshot().items():
        setattr(record, key, value)
    return record


logging.setLogRecordFactory(_record_with_context)


def setup(json_lines: bool = True, level: int = logging.INFO) -> None:
    root = logging.getLogger()
    if any(getattr(h, "_payrouter", False) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler._payrouter = True
    handler.setFormatter(JsonFormatter() if json_lines else logging.Formatter("%(levelname)s %(name)s %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
