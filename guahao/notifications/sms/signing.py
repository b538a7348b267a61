"""Aliyun's RPC request signature (SignatureMethod HMAC-SHA1, SignatureVersion 1.0), shared by the
client and the simulator (standard library only).

The parameters but Signature, sorted by name, each name and value percent-encoded (UTF-8; only
A-Z a-z 0-9 - _ . ~ left as they are, a space as %20, never +), joined with & and =; the string to
sign is METHOD + "&%2F&" + percentEncode(that query); Signature = Base64(HMAC-SHA1(secret + "&",
string to sign)).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from urllib.parse import quote

API_VERSION = "2017-05-25"
ACTION = "SendSms"
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def percent_encode(value: str) -> str:
    """Aliyun's percentEncode: RFC 3986 unreserved characters stay, everything else is %XY of its
    UTF-8 bytes (a space is %20, never +; * is %2A; ~ stays)."""
    return quote(value, safe="~")


def canonical_query(params: Mapping[str, str]) -> str:
    return "&".join(f"{percent_encode(k)}={percent_encode(v)}" for k, v in sorted(params.items()) if k != "Signature")


def string_to_sign(method: str, params: Mapping[str, str]) -> str:
    return f"{method}&{percent_encode('/')}&{percent_encode(canonical_query(params))}"


def signature(secret: str, method: str, params: Mapping[str, str]) -> str:
    digest = hmac.new(f"{secret}&".encode(), string_to_sign(method, params).encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()
