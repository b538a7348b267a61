"""Structured JSON logs with a request id; phone and ID numbers never reach a log line in clear."""

from __future__ import annotations

import contextvars
import json
import logging
import re
import time
import uuid
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from guahao.limits.clientip import client_ip

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

# Mainland ID (18), residence permits and foreigner IDs share the 18-character shape; phones are 11
# digits starting with 1. Masking keeps the same shape as the responses (138****1234).
_ID_RE = re.compile(r"(?<![0-9A-Za-z])(\d)\d{16}([0-9Xx])(?![0-9A-Za-z])")
_PHONE_RE = re.compile(r"(?<!\d)(1[3-9]\d)\d{4}(\d{4})(?!\d)")


def scrub(text: str) -> str:
    text = _ID_RE.sub(lambda m: m.group(1) + "*" * 16 + m.group(2), text)
    return _PHONE_RE.sub(lambda m: m.group(1) + "****" + m.group(2), text)


class MaskPersonalDataFilter(logging.Filter):
    """Last line of defence: code masks on purpose; this catches what slipped through."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = scrub(record.getMessage())
        record.args = ()
        return True


_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "request_id": request_id.get(),
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return scrub(json.dumps(entry, ensure_ascii=False, default=str))


class RequestIdMiddleware:
    """Tags every log line of a request with one id, taken from X-Request-ID or made here."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response
        self.log = logging.getLogger("guahao.http")

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.headers.get("X-Request-ID", "")
        rid = incoming if re.fullmatch(r"[A-Za-z0-9-]{8,64}", incoming) else uuid.uuid4().hex
        token = request_id.set(rid)
        started = time.perf_counter()
        try:
            response = self.get_response(request)
            response["X-Request-ID"] = rid
            self.log.info(
                "request",
                extra={
                    "method": request.method,
                    "path": request.path,
                    "status": response.status_code,
                    "client_ip": client_ip(request),
                    "ms": round((time.perf_counter() - started) * 1000, 1),
                },
            )
            return response
        finally:
            request_id.reset(token)
