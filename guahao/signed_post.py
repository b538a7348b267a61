"""Signed JSON POSTs to the services a hospital contracts (SMS gateway, real-name verification).

The receiver checks `X-Guahao-Signature` = hex HMAC-SHA256 of `timestamp + "." + body` under the
shared secret, and refuses a `X-Guahao-Timestamp` far from its clock. Redirects are not followed
(a signed POST must reach the address configured, or fail), and there are no retries: the caller
decides what a failure means for the patient.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

TIMESTAMP_HEADER = "X-Guahao-Timestamp"
SIGNATURE_HEADER = "X-Guahao-Signature"
MAX_ANSWER_BYTES = 64 * 1024


class Unreachable(Exception):
    """No answer: refused connection, DNS failure, or the timeout ran out."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> object:
        """The body as JSON; ValueError when it is not."""
        return json.loads(self.body)


def sign(secret: str, timestamp: str, body: bytes) -> str:
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ARG002
        return None  # the 3xx answer comes back as it is, and is not ok


_opener = urllib.request.build_opener(_NoRedirects)


def post_json(url: str, payload: dict, *, secret: str, timeout: float) -> Answer:
    """POST `payload` as signed UTF-8 JSON; any HTTP answer is returned, no answer raises Unreachable."""
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    timestamp = str(int(time.time()))
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json; charset=utf-8",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(secret, timestamp, body),
        },
    )
    try:
        with _opener.open(request, timeout=timeout) as response:
            return Answer(response.status, response.read(MAX_ANSWER_BYTES))
    except urllib.error.HTTPError as exc:
        with exc:
            return Answer(exc.code, exc.read(MAX_ANSWER_BYTES))
    except (urllib.error.URLError, OSError) as exc:  # TimeoutError is an OSError
        raise Unreachable(str(getattr(exc, "reason", exc))) from exc
