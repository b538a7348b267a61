"""What both providers' protocols share: RSA-SHA256 signatures (PKCS#1 v1.5, base64), the AES-GCM
of WeChat's notification resources, the two providers' time and amount formats, and the reply
the HTTP front writes (or, for a simulated network fault, does not write)."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import functools
import json
import re
import secrets
import string
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

LOCAL_TZ = ZoneInfo("Asia/Shanghai")
ALIPAY_TIME = "%Y-%m-%d %H:%M:%S"


@dataclass
class Reply:
    """One HTTP answer. `hangup` closes the connection without answering at all: the client sees
    a connection error, as when a reply is lost on the network."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    hangup: bool = False

    @classmethod
    def lost(cls) -> Reply:
        return cls(status=0, hangup=True)


# --- RSA ---------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _private_key(pem: str) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(pem.encode("ascii"), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


@functools.lru_cache(maxsize=64)
def _public_key(pem: str) -> rsa.RSAPublicKey:
    key = serialization.load_pem_public_key(pem.encode("ascii"))
    assert isinstance(key, rsa.RSAPublicKey)
    return key


def rsa_sign(private_pem: str, message: str) -> str:
    """Base64 RSA-SHA256 (PKCS#1 v1.5) of the UTF-8 `message`: both providers' RSA2 signature."""
    signature = _private_key(private_pem).sign(
        message.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256()
    )
    return base64.b64encode(signature).decode("ascii")


def rsa_verify(public_pem: str, message: str, signature: str) -> bool:
    try:
        raw = base64.b64decode(signature.encode("ascii"), validate=False)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return False
    try:
        _public_key(public_pem).verify(
            raw, message.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256()
        )
    except (InvalidSignature, ValueError):
        return False
    return True


def wrong_signature(private_pem: str, message: str) -> str:
    """A well-formed signature that does not match `message`: what a forger would send."""
    return rsa_sign(private_pem, message + "\x00forged")


# --- WeChat's AEAD_AES_256_GCM resources -------------------------------------------------------


def aes_gcm_encrypt(key: str, plaintext: str, associated_data: str) -> tuple[str, str]:
    """(nonce, base64 ciphertext) as WeChat encrypts a notification resource: a 12-character
    ASCII nonce, the APIv3 key as the AES-256 key, the tag appended to the ciphertext."""
    nonce = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(12))
    sealed = AESGCM(key.encode("utf-8")).encrypt(
        nonce.encode("ascii"), plaintext.encode("utf-8"), associated_data.encode("utf-8")
    )
    return nonce, base64.b64encode(sealed).decode("ascii")


# --- formats -----------------------------------------------------------------------------------


def compact_json(value: Any) -> str:
    """JSON as both providers answer it: compact, Chinese unescaped."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def rfc3339(moment: dt.datetime) -> str:
    """WeChat's time format: '2018-06-08T10:34:56+08:00'."""
    return moment.astimezone(LOCAL_TZ).replace(microsecond=0).isoformat()


def parse_rfc3339(text: str) -> dt.datetime | None:
    """None unless `text` is an RFC 3339 time with a zone."""
    if not isinstance(text, str) or not re.fullmatch(
        r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})", text
    ):
        return None
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def alipay_time(moment: dt.datetime) -> str:
    """Alipay's time format: 'yyyy-MM-dd HH:mm:ss' in Beijing time."""
    return moment.astimezone(LOCAL_TZ).strftime(ALIPAY_TIME)


def parse_alipay_time(text: str) -> dt.datetime | None:
    try:
        return dt.datetime.strptime(text, ALIPAY_TIME).replace(tzinfo=LOCAL_TZ)
    except (TypeError, ValueError):
        return None


_YUAN = re.compile(r"^(\d{1,9})(?:\.(\d{1,2}))?$")


def fen_of_yuan(text: object) -> int | None:
    """'12.34' → 1234, exactly (never through floats); None unless a positive amount of 元 with at
    most two decimals, as Alipay's amount fields are."""
    if not isinstance(text, str):
        return None
    match = _YUAN.match(text.strip())
    if match is None:
        return None
    fen = int(match.group(1)) * 100 + int((match.group(2) or "0").ljust(2, "0"))
    return fen or None


def yuan(fen: int) -> str:
    return f"{fen // 100}.{fen % 100:02d}"
