"""Personal data at rest: SM4-GCM encryption, keyed SM3 blind indexes, and masking for display.

Ciphertext is `v1:` + base64(nonce | ciphertext | tag) under key "1" (the original key) and
`k<id>:` + the same under any other key id, so rows written under several keys are read side by side
while keys rotate (guahao/keyring.py; `guahao rotate-keys`).
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import os
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver

from guahao import keyring
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


@dataclasses.dataclass(frozen=True)
class Keyring:
    """The keys of one kind: `current` writes, every key in `keys` (current first) reads."""

    current: str
    keys: dict[str, bytes]

    @property
    def retired(self) -> list[str]:
        return [kid for kid in self.keys if kid != self.current]


def _keyring(name: str, keys_text: str, single: str) -> Keyring:
    upper = name.upper()
    try:
        entries = keyring.combine(f"GUAHAO_{upper}_KEYS", keys_text, f"GUAHAO_{upper}_KEY", single)
        keys = {kid: bytes.fromhex(hex_key) for kid, hex_key in entries}
    except ValueError as exc:  # KeyringError, or a key that is not hex
        raise ImproperlyConfigured(str(exc)) from exc
    if not keys:  # nothing configured: the development key, as key "1"
        keys = {keyring.LEGACY_KID: _dev_key(name)}
    sizes_ok = all(len(k) == 16 if name == "data" else len(k) >= 16 for k in keys.values())
    if not sizes_ok:
        raise ValueError(
            "GUAHAO_DATA_KEY must be 32 hex characters and GUAHAO_INDEX_KEY at least 32"
        )
    return Keyring(current=next(iter(keys)), keys=keys)


@functools.cache
def keyrings() -> tuple[Keyring, Keyring]:
    """(data keys, index keys), read once per process from settings."""
    data = _keyring("data", getattr(settings, "DATA_KEYS", ""), settings.DATA_KEY)
    index = _keyring("index", getattr(settings, "INDEX_KEYS", ""), settings.INDEX_KEY)
    return data, index


@receiver(setting_changed)
def _forget_keys(*, setting: str, **kwargs: object) -> None:
    # Only the key settings: a test that switches ENV to production keeps the keys it had.
    if setting in {"DATA_KEY", "DATA_KEYS", "INDEX_KEY", "INDEX_KEYS"}:
        keyrings.cache_clear()


def _prefix(kid: str) -> str:
    # Key "1" keeps the original `v1:` form, so rows written before key ids existed stay valid.
    return "v1:" if kid == keyring.LEGACY_KID else f"k{kid}:"


def key_id(token: str) -> str:
    """The id of the key that encrypted `token` ("1" for `v1:`)."""
    if token.startswith("v1:"):
        return keyring.LEGACY_KID
    head, sep, _ = token.partition(":")
    if not (sep and head.startswith("k") and len(head) > 1):
        raise ValueError("unknown ciphertext version")
    return head[1:]


def encrypt(plain: str) -> str:
    data, _ = keyrings()
    nonce = os.urandom(_NONCE)
    enc = Cipher(algorithms.SM4(data.keys[data.current]), modes.GCM(nonce)).encryptor()
    body = enc.update(plain.encode()) + enc.finalize()
    return _prefix(data.current) + base64.b64encode(nonce + body + enc.tag).decode()


def decrypt(token: str) -> str:
    data, _ = keyrings()
    kid = key_id(token)
    if kid not in data.keys:
        raise ValueError(f"ciphertext key {kid} is not configured (GUAHAO_DATA_KEYS)")
    raw = base64.b64decode(token[len(_prefix(kid)) :])
    nonce, body, tag = raw[:_NONCE], raw[_NONCE:-_TAG], raw[-_TAG:]
    dec = Cipher(algorithms.SM4(data.keys[kid]), modes.GCM(nonce, tag)).decryptor()
    try:
        return (dec.update(body) + dec.finalize()).decode()
    except InvalidTag as exc:  # a wrong key under this id, or a damaged value: say which key
        raise ValueError(f"ciphertext does not verify under key {kid}") from exc


def is_current(token: str) -> bool:
    """Whether `token` is encrypted with the current data key (what `rotate-keys` looks for)."""
    return key_id(token) == keyrings()[0].current


def _mac(key: bytes, value: str, purpose: str) -> str:
    mac = hmac.HMAC(key, hashes.SM3())
    mac.update(f"{purpose}:{value.strip().upper()}".encode())
    return mac.finalize().hex()


def blind_index(value: str, *, purpose: str) -> str:
    """Deterministic keyed SM3 HMAC, so equal values can be found without decrypting anything.
    Written with the current index key; look rows up with `blind_indexes`."""
    _, index = keyrings()
    return _mac(index.keys[index.current], value, purpose)


def blind_indexes(value: str, *, purpose: str) -> list[str]:
    """The index of `value` under every index key, current first: while `rotate-keys` runs, a row
    may still carry the digest of a retired key, and a lookup must find it either way."""
    _, index = keyrings()
    return [_mac(key, value, purpose) for key in index.keys.values()]


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
