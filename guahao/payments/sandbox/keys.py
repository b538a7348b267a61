"""The key material of one sandbox merchant: WeChat Pay (merchant API key, platform public key,
APIv3 key) and Alipay (application and Alipay key pairs). Both sides of every pair are kept here
because the gateway plays the provider and the tests play the merchant; the merchant's deployment
only ever needs its own private keys and the providers' public keys."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import secrets
import string
import tempfile
from dataclasses import asdict, dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


@dataclass(frozen=True)
class WechatKeys:
    mchid: str
    appid: str
    merchant_serial_no: str  # hex upper: the merchant API certificate's serial number
    merchant_private_key: str  # PEM PKCS8: the merchant signs requests and JSAPI paySign
    merchant_public_key: str  # PEM SubjectPublicKeyInfo: the gateway verifies those
    platform_private_key: str  # the gateway signs responses and notifications
    platform_public_key: str  # the merchant verifies them (wechatpayv3's public_key mode)
    platform_public_key_id: str  # "PUB_KEY_ID_" + digits, sent as Wechatpay-Serial
    apiv3_key: str  # 32 ASCII characters: the AEAD_AES_256_GCM key of notification resources


@dataclass(frozen=True)
class AlipayKeys:
    app_id: str
    seller_id: str  # the merchant's PID: "2088" + 12 digits
    app_private_key: str  # PEM PKCS8: the merchant signs requests
    app_public_key: str
    alipay_private_key: str  # the gateway signs responses and notifications
    alipay_public_key: str  # the merchant verifies them


def _key_pair() -> tuple[str, str]:
    """(PKCS8 private PEM, SubjectPublicKeyInfo public PEM) of a fresh RSA-2048 key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii")
    )
    return private, public


def _digits(count: int) -> str:
    return "".join(secrets.choice(string.digits) for _ in range(count))


@dataclass(frozen=True)
class SandboxKeys:
    wechat: WechatKeys
    alipay: AlipayKeys

    @classmethod
    def generate(cls) -> SandboxKeys:
        """Fresh RSA-2048 keys and random merchant ids."""
        merchant_private, merchant_public = _key_pair()
        platform_private, platform_public = _key_pair()
        app_private, app_public = _key_pair()
        alipay_private, alipay_public = _key_pair()
        alphabet = string.ascii_letters + string.digits
        wechat = WechatKeys(
            mchid="19" + _digits(8),
            appid="wx" + secrets.token_hex(8),
            merchant_serial_no=secrets.token_hex(20).upper(),
            merchant_private_key=merchant_private,
            merchant_public_key=merchant_public,
            platform_private_key=platform_private,
            platform_public_key=platform_public,
            platform_public_key_id="PUB_KEY_ID_" + _digits(28),
            apiv3_key="".join(secrets.choice(alphabet) for _ in range(32)),
        )
        alipay = AlipayKeys(
            app_id="2021" + _digits(12),
            seller_id="2088" + _digits(12),
            app_private_key=app_private,
            app_public_key=app_public,
            alipay_private_key=alipay_private,
            alipay_public_key=alipay_public,
        )
        return cls(wechat=wechat, alipay=alipay)

    def to_json(self) -> str:
        return json.dumps({"wechat": asdict(self.wechat), "alipay": asdict(self.alipay)}, indent=2)

    @classmethod
    def from_json(cls, text: str) -> SandboxKeys:
        data = json.loads(text)
        return cls(wechat=WechatKeys(**data["wechat"]), alipay=AlipayKeys(**data["alipay"]))

    @classmethod
    def load_or_create(cls, path: pathlib.Path) -> SandboxKeys:
        """The keys in `path`, generated there (mode 0600) when missing. The file appears whole or
        not at all (written aside, then hard-linked into place), so of two processes starting
        together one writes it and the other reads the winner's keys."""
        path = pathlib.Path(path)
        if path.exists():
            return cls.from_json(path.read_text(encoding="utf-8"))
        keys = cls.generate()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(keys.to_json())
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(temp_name, path)  # fails if another process got there first
            except FileExistsError:
                return cls.from_json(path.read_text(encoding="utf-8"))
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp_name)
        return keys
