"""The wire format of the HIS gateway contract (docs/his.md, docs/his-gateway.openapi.yaml): the
paths, the request signature both sides compute, and the error codes. Pure Python: the HTTP
adapter, the HIS simulator and `guahao his-check` all use it, and a hospital engineer can read
it as the reference implementation of the signature.

Signature. Every request carries

    X-His-Hospital:  the hospital's code at guahao
    X-His-Timestamp: Unix seconds
    X-His-Nonce:     16–64 characters [0-9A-Za-z], never reused within 10 minutes
    X-His-Signature: hex HMAC-SHA256(secret, "{timestamp}\\n{nonce}\\n{METHOD}\\n{path?query}\\n{sha256hex(body)}")

and every answer (whatever its status) the same three X-His-Timestamp / X-His-Nonce /
X-His-Signature headers, signed over "{timestamp}\\n{nonce}\\n{status}\\n{sha256hex(body)}". The
receiver refuses a timestamp more than 5 minutes from its clock and a nonce it has seen; an answer
whose signature does not check is treated as no answer at all.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass

HOSPITAL_HEADER = "X-His-Hospital"
TIMESTAMP_HEADER = "X-His-Timestamp"
NONCE_HEADER = "X-His-Nonce"
SIGNATURE_HEADER = "X-His-Signature"
MAX_SKEW_SECONDS = 300
NONCE_RE = re.compile(r"^[0-9A-Za-z]{16,64}$")

# Paths under the gateway's base URL.
SCHEDULE = "/schedule"  # GET ?since=<cursor>&days=<n>
LOCKS = "/locks"  # POST: lock a number
LOCK_RELEASE = "/locks/release"  # POST
REGISTRATIONS = "/registrations"  # POST: register a locked (or, without a lock API, free) number
REGISTRATION_QUERY = "/registrations/query"  # POST
REGISTRATION_CANCEL = "/registrations/cancel"  # POST
REGISTRATIONS_OF_DAY = "/registrations/day"  # GET ?date=YYYY-MM-DD
PATIENT_CARD = "/patients/card"  # POST: find or create the patient's card


class Code:
    """Error codes of a refusal: HTTP 4xx with {"code": …, "message": …}."""

    SLOT_TAKEN = "SLOT_TAKEN"  # the number is locked or registered for someone else
    LOCK_NOT_FOUND = "LOCK_NOT_FOUND"  # register: no live lock for this hold (expired on the HIS side)
    SESSION_SUSPENDED = "SESSION_SUSPENDED"  # 停诊 at the HIS
    SESSION_CLOSED = "SESSION_CLOSED"  # past the HIS's own booking or cancel deadline
    PATIENT_REJECTED = "PATIENT_REJECTED"  # the HIS will not register this person (identity, ban)
    ALREADY_VISITED = "ALREADY_VISITED"  # cancel: the patient checked in or was seen
    NOT_FOUND = "NOT_FOUND"  # query: no registration for this hold
    BAD_REQUEST = "BAD_REQUEST"  # a field is missing or malformed
    BAD_SIGNATURE = "BAD_SIGNATURE"  # 401: signature, timestamp, nonce or hospital refused


def body_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def request_signature(secret: str, *, timestamp: str, nonce: str, method: str, target: str, body: bytes) -> str:
    """`target` is the path with its query string, exactly as sent (for example
    "/guahao/v1/schedule?since=42&days=7" when the base URL has a path of its own)."""
    message = f"{timestamp}\n{nonce}\n{method.upper()}\n{target}\n{body_digest(body)}"
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def response_signature(secret: str, *, timestamp: str, nonce: str, status: int, body: bytes) -> str:
    message = f"{timestamp}\n{nonce}\n{status}\n{body_digest(body)}"
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def new_nonce() -> str:
    return secrets.token_hex(16)


def signed_request_headers(secret: str, *, hospital: str, method: str, target: str, body: bytes) -> dict[str, str]:
    timestamp, nonce = str(int(time.time())), new_nonce()
    return {
        HOSPITAL_HEADER: hospital,
        TIMESTAMP_HEADER: timestamp,
        NONCE_HEADER: nonce,
        SIGNATURE_HEADER: request_signature(
            secret, timestamp=timestamp, nonce=nonce, method=method, target=target, body=body
        ),
        "Content-Type": "application/json; charset=utf-8",
    }


def signed_response_headers(secret: str, *, status: int, body: bytes) -> dict[str, str]:
    timestamp, nonce = str(int(time.time())), new_nonce()
    return {
        TIMESTAMP_HEADER: timestamp,
        NONCE_HEADER: nonce,
        SIGNATURE_HEADER: response_signature(secret, timestamp=timestamp, nonce=nonce, status=status, body=body),
        "Content-Type": "application/json; charset=utf-8",
    }


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str = ""


def check_timestamp(timestamp: str, *, now: float | None = None) -> Verdict:
    try:
        skew = abs((now if now is not None else time.time()) - int(timestamp))
    except ValueError:
        return Verdict(False, "timestamp is not Unix seconds")
    return Verdict(True) if skew <= MAX_SKEW_SECONDS else Verdict(False, "timestamp more than 5 minutes off")


def verify_request(secret: str, headers: dict[str, str], *, method: str, target: str, body: bytes) -> Verdict:
    """The receiving side's check of a request (the nonce's freshness is the receiver's to keep)."""
    h = {k.lower(): v for k, v in headers.items()}
    timestamp, nonce, signature = (h.get(n.lower(), "") for n in (TIMESTAMP_HEADER, NONCE_HEADER, SIGNATURE_HEADER))
    if not NONCE_RE.match(nonce):
        return Verdict(False, "nonce missing or malformed")
    if not (fresh := check_timestamp(timestamp)).ok:
        return fresh
    expected = request_signature(secret, timestamp=timestamp, nonce=nonce, method=method, target=target, body=body)
    return Verdict(True) if hmac.compare_digest(expected, signature) else Verdict(False, "signature does not match")


def verify_response(secret: str, headers: dict[str, str], *, status: int, body: bytes) -> Verdict:
    h = {k.lower(): v for k, v in headers.items()}
    timestamp, nonce, signature = (h.get(n.lower(), "") for n in (TIMESTAMP_HEADER, NONCE_HEADER, SIGNATURE_HEADER))
    if not NONCE_RE.match(nonce):
        return Verdict(False, "answer's nonce missing or malformed")
    if not (fresh := check_timestamp(timestamp)).ok:
        return fresh
    expected = response_signature(secret, timestamp=timestamp, nonce=nonce, status=status, body=body)
    return Verdict(True) if hmac.compare_digest(expected, signature) else Verdict(False, "answer's signature does not match")
