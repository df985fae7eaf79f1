"""Structured logs: one JSON object per line, secrets scrubbed — for the worker and the Slack bridge."""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime

from starter.config import SECRET_NAMES
from workflows.policy import SECRET_ENV_PREFIX

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """`{"time","level","logger","msg",…}` with whatever `extra` the SDK attaches (workflow/activity ids)."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if len(s) >= 6]

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["error"] = self.formatException(record.exc_info)
        line = json.dumps(doc, default=str)
        for secret in self._secrets:
            line = line.replace(secret, "***")
        return line


def secret_values(env: dict[str, str] | None = None) -> list[str]:
    """The values of every secret deployctl reads from the environment: the tokens, and the password
    parameters a worker supplies (`DEPLOYCTL_PARAM_*`, SPEC §10)."""
    env = dict(os.environ) if env is None else env
    return [env.get(name, "") for name in SECRET_NAMES] + [
        value for name, value in sorted(env.items()) if name.startswith(SECRET_ENV_PREFIX)
    ]


def setup_logging(level: str | None = None) -> None:
    """Log JSON lines to stderr; every secret deployctl reads from the environment is masked."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter(secret_values()))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level or os.environ.get("DEPLOYCTL_LOG_LEVEL", "INFO"))
