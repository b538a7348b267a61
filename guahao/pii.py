"""Personal data at rest: SM4-GCM encryption, keyed SM3 blind indexes, and masking for display.

Ciphertext is `v1:` + base64(nonce | ciphertext | tag), so a later key version can sit beside it.
"""

from __future__ import annotations

import base64
import functools
import os
import secrets

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from guahao.environment import DEVELOPMENT
from guahao.files import write_private_once

_NONCE = 12
_TAG = 16


def _dev_key(name: str) -> bytes:
    """A development key kept under var/ (owner-only), made once; production sets GUAHAO_*_KEY."""
    if settings.ENV != DEVELOPMENT:
        setting = f"GUAHAO_{name.upper()}_KEY"
        raise ImproperlyConfigured(f"{setting} 未设置 / {setting} is missing")
    path = settings.VAR_DIR / f"{name}.key"
    if not path.exists():
        write_private_once(path, secrets.token_hex(16))
    return bytes.fromhex(path.read_text().strip())


@functools.cache
def _keys() -> tuple[bytes, bytes]:
    data = bytes.fromhex(settings.DATA_KEY) if settings.DATA_KEY else _dev_key("data")
    index = bytes.fromhex(settings.INDEX_KEY) if settings.INDEX_KEY else _dev_key("index")
    if len(data) != 16 or len(index) < 16:
        raise ValueError("GUAHAO_DATA_KEY must be 32 hex characters and GUAHAO_INDEX_KEY at least 32")
    return data, index


def encrypt(plain: str) -> str:
    key, _ = _keys()
    nonce = os.urandom(_NONCE)
    enc = Cipher(algorithms.SM4(key), modes.GCM(nonce)).encryptor()
    body = enc.update(plain.encode()) + enc.finalize()
    return "v1:" + base64.b64encode(nonce + body + enc.tag).decode()


def decrypt(token: str) -> str:
    key, _ = _keys()
    if not token.startswith("v1:"):
        raise ValueError("unknown ciphertext version")
    raw = base64.b64decode(token[3:])
    nonce, body, tag = raw[:_NONCE], raw[_NONCE:-_TAG], raw[-_TAG:]
    dec = Cipher(algorithms.SM4(key), modes.GCM(nonce, tag)).decryptor()
    return (dec.update(body) + dec.finalize()).decode()


def blind_index(value: str, *, purpose: str) -> str:
    """Deterministic keyed SM3 HMAC, so equal values can be found without decrypting anything."""
    _, key = _keys()
    mac = hmac.HMAC(key, hashes.SM3())
    mac.update(f"{purpose}:{value.strip().upper()}".encode())
    return mac.finalize().hex()


def mask_name(name: str) -> str:
    """张三 → 张*, 张三丰 → 张*丰, 欧阳娜娜 → 欧**娜."""
    if len(name) <= 1:
        return name
    if len(name) == 2:
        return name[0] + "*"
    return name[0] + "*" * (len(name) - 2) + name[-1]


def mask_phone(phone: str) -> str:
    if len(phone) < 7:
        return "*" * len(phone)
    return phone[:3] + "*" * (len(phone) - 7) + phone[-4:]


def mask_id_number(number: str) -> str:
    """110101199003077777 → 1****************7: the first and last characters only (the region,
    birth date and sex inside it are personal data too)."""
    if len(number) < 3:
        return "*" * len(number)
    return number[0] + "*" * (len(number) - 2) + number[-1]


def token_hash(key: str) -> str:
    """Bearer tokens are stored as SHA-256: a leaked table does not sign anyone in."""
    import hashlib

    return hashlib.sha256(key.encode()).hexdigest()
