"""Structured, quiet logs: one `key=value` line per record on stderr, WARNING and up unless asked.

Services call `configure(name)` once; SMARTSHELF_LOG_LEVEL=INFO shows their progress.
"""

from __future__ import annotations

import logging
import sys
import time


class _KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", {})
        parts = [
            f"ts={time.strftime('%Y-%m-%dT%H:%M:%S', time.localtime(record.created))}",
            f"level={record.levelname.lower()}", f"service={record.name}", f"msg={record.getMessage()!r}",
        ]
        parts += [f"{key}={value}" for key, value in fields.items()]
        if record.exc_info:
            parts.append(f"error={self.formatException(record.exc_info)!r}")
        return " ".join(parts)


def configure(service: str, level: str = "WARNING") -> logging.Logger:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    return logging.getLogger(service)


def info(logger: logging.Logger, message: str, **fields: object) -> None:
    logger.info(message, extra={"fields": fields})


def warning(logger: logging.Logger, message: str, **fields: object) -> None:
    logger.warning(message, extra={"fields": fields})


def error(logger: logging.Logger, message: str, **fields: object) -> None:
    logger.error(message, extra={"fields": fields})
