"""Development or production (GUAHAO_ENV), and what production refuses to start with.

`development` (make run, the test suite) allows the sandbox providers, the log SMS channel and keys
generated under var/, and says so. `production` is every other start: an unset GUAHAO_ENV means
production, and an unknown value refuses to start. `problems()` is the one list of rules; the
project's AppConfig.ready() applies it, so the web server (guahao.wsgi), the worker and every
management command refuse alike, before they touch the database.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import NoReturn

DEVELOPMENT = "development"
PRODUCTION = "production"
ENVIRONMENTS = (DEVELOPMENT, PRODUCTION)

# What settings.py uses when GUAHAO_SECRET_KEY is unset: fine on a laptop, refused in production.
DEV_SECRET_KEY = "dev-only-not-secret-" + "x" * 32

# gunicorn halts instead of booting the next worker when one exits with this status ("App failed to
# load"); the commands use it too, so a script can tell a refusal from a command's own failure (1).
EXIT_REFUSED = 4

DEVELOPMENT_WARNING = (
    "development mode: sandbox providers, log SMS channel and generated keys are allowed; "
    "never use with real patients"
)

log = logging.getLogger("guahao.environment")


@dataclass(frozen=True)
class Registry:
    """The adapters one setting can name, and which of them are for development only."""

    setting: str
    names: Collection[str]
    development_only: Collection[str] = ()


@dataclass(frozen=True)
class Deployment:
    """The settings the rules look at (see settings.py for where each comes from)."""

    env: str
    secret_key: str
    data_key: str
    index_key: str
    debug: bool
    adapters: Mapping[str, tuple[str, ...]]  # setting name → the adapter names it configures
    sms_url: str = ""
    sms_secret: str = ""
    realname_url: str = ""
    realname_secret: str = ""
    message_channels: tuple[str, ...] = ()
    sms_access_key_id: str = ""
    sms_access_key_secret: str = ""
    sms_sign_name: str = ""
    sms_code_template: str = ""
    data_keys: str = ""  # GUAHAO_DATA_KEYS / GUAHAO_INDEX_KEYS: key lists while keys rotate
    index_keys: str = ""

    @classmethod
    def from_settings(cls, s: object) -> Deployment:
        return cls(
            env=s.ENV,
            secret_key=s.SECRET_KEY,
            data_key=s.DATA_KEY,
            index_key=s.INDEX_KEY,
            debug=s.DEBUG,
            adapters={
                "GUAHAO_HIS_ADAPTER": (s.HIS_ADAPTER,),
                "GUAHAO_SMS_CHANNEL": (s.SMS_CHANNEL,),
                "GUAHAO_REALNAME_VERIFIER": (s.REALNAME_VERIFIER,),
            },
            sms_url=s.SMS_URL,
            sms_secret=s.SMS_SECRET,
            realname_url=s.REALNAME_URL,
            realname_secret=s.REALNAME_SECRET,
            message_channels=tuple(s.MESSAGE_CHANNELS),
            sms_access_key_id=s.SMS_ACCESS_KEY_ID,
            sms_access_key_secret=s.SMS_ACCESS_KEY_SECRET,
            sms_sign_name=s.SMS_SIGN_NAME,
            sms_code_template=s.SMS_CODE_TEMPLATE,
            data_keys=getattr(s, "DATA_KEYS", ""),
            index_keys=getattr(s, "INDEX_KEYS", ""),
        )


class UnsafeStart(Exception):
    """The configuration is not fit to start with; `problems` lists every reason."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(refusal_text(problems))


def registries() -> list[Registry]:
    """The adapter registries of each port (imported here: they live in the apps)."""
    from guahao.his.services import ADAPTERS as his
    from guahao.patients.realname import DEVELOPMENT_ONLY as realname_dev
    from guahao.patients.realname import VERIFIERS
    from guahao.patients.sms import CHANNELS
    from guahao.patients.sms import DEVELOPMENT_ONLY as sms_dev

    return [
        Registry("GUAHAO_HIS_ADAPTER", his),
        Registry("GUAHAO_SMS_CHANNEL", CHANNELS, sms_dev),
        Registry("GUAHAO_REALNAME_VERIFIER", VERIFIERS, realname_dev),
    ]


def problems(d: Deployment, known: list[Registry]) -> list[str]:
    """Every reason this deployment must not start, each "中文 / English"; empty when it may."""
    if d.env not in ENVIRONMENTS:
        found = [
            f"GUAHAO_ENV={d.env!r} 无效，只能是 development 或 production / "
            f"GUAHAO_ENV={d.env!r} is not development or production"
        ]
    else:
        found = []
    if d.env == DEVELOPMENT:
        return found + _adapter_problems(d, known, production=False)
    found += _secret_key_problems(d.secret_key)
    if d.data_keys or d.index_keys:
        found += _key_list_problems(d)
    else:
        found += _hex_key_problems("GUAHAO_DATA_KEY", d.data_key, exact=32)
        found += _hex_key_problems("GUAHAO_INDEX_KEY", d.index_key, exact=None)
        if d.data_key and d.data_key.lower() == d.index_key.lower():
            found.append(
                "GUAHAO_INDEX_KEY 不能与 GUAHAO_DATA_KEY 相同 / "
                "GUAHAO_INDEX_KEY must differ from GUAHAO_DATA_KEY"
            )
    found += _adapter_problems(d, known, production=True)
    found += _http_adapter_problems(d)
    found += _message_channel_problems(d)
    if d.debug:
        found.append("GUAHAO_DEBUG 在生产环境必须关闭 / GUAHAO_DEBUG must be off in production")
    return found


def _secret_key_problems(key: str) -> list[str]:
    if not key or key == DEV_SECRET_KEY:
        return [
            "GUAHAO_SECRET_KEY 未设置或为开发默认值 / "
            "GUAHAO_SECRET_KEY is missing or the development default"
        ]
    if len(key) < 50 or len(set(key)) < 5 or key.startswith("django-insecure-"):
        return [
            "GUAHAO_SECRET_KEY 强度不足：至少 50 个字符且至少 5 种不同字符 / "
            "GUAHAO_SECRET_KEY is weak: use at least 50 characters with at least 5 different ones"
        ]
    return []


# A random 32-hex key has about 14 different digits; fewer than 8 happens by chance about once in
# 27 million keys, but every time someone types 0000… or abab….
_MIN_DISTINCT_HEX = 8


def _key_list_problems(d: Deployment) -> list[str]:
    """The same rules as for the single keys, for every key of GUAHAO_DATA_KEYS / _INDEX_KEYS."""
    from guahao.keyring import KeyringError, combine

    found: list[str] = []
    lists = {}
    for kind, text, single, exact in (
        ("DATA", d.data_keys, d.data_key, 32),
        ("INDEX", d.index_keys, d.index_key, None),
    ):
        setting = f"GUAHAO_{kind}_KEYS"
        try:
            entries = combine(setting, text, f"GUAHAO_{kind}_KEY", single)
        except KeyringError as exc:
            found.append(str(exc))
            continue
        if not entries:
            found.append(f"{setting} 未设置 / {setting} is missing")
        for kid, key in entries:
            found += _hex_key_problems(f"{setting}[{kid}]", key, exact=exact)
        lists[kind] = {key.lower() for _, key in entries}
    if lists.get("DATA", set()) & lists.get("INDEX", set()):
        found.append(
            "索引密钥不能与数据密钥相同 / an index key must differ from every data key"
        )
    return found


def _hex_key_problems(setting: str, key: str, *, exact: int | None) -> list[str]:
    if not key:
        return [f"{setting} 未设置 / {setting} is missing"]
    length_ok = len(key) == exact if exact else len(key) >= 32 and len(key) % 2 == 0
    try:
        bytes.fromhex(key)
        is_hex = True
    except ValueError:
        is_hex = False
    if not (length_ok and is_hex):
        size = f"{exact} 位" if exact else "至少 32 位（偶数位）"
        size_en = f"{exact}" if exact else "an even number, at least 32, of"
        return [f"{setting} 必须是 {size}十六进制字符 / {setting} must be {size_en} hex characters"]
    if len(set(key.lower())) < _MIN_DISTINCT_HEX:
        return [
            f"{setting} 过于简单（不同字符太少），请用密钥管理系统生成 / "
            f"{setting} is weak (too few different characters): generate it with your key management system"
        ]
    return []


def _adapter_problems(d: Deployment, known: list[Registry], *, production: bool) -> list[str]:
    found = []
    for registry in known:
        names = d.adapters.get(registry.setting, ())
        if not names:
            found.append(f"{registry.setting} 未设置 / {registry.setting} is missing")
        for name in names:
            if production and name in registry.development_only:
                found.append(
                    f"{registry.setting}={name} 仅供开发和测试，不能用于生产 / "
                    f"{registry.setting}={name} is for development and tests only, not production"
                )
            elif name not in registry.names:
                choices = ", ".join(sorted(registry.names))
                found.append(
                    f"{registry.setting}={name} 不存在（可选：{choices}） / "
                    f"{registry.setting}={name} does not exist (choose from: {choices})"
                )
    return found


def _http_adapter_problems(d: Deployment) -> list[str]:
    found = []
    needs = [
        ("GUAHAO_SMS_CHANNEL", "GUAHAO_SMS_URL", d.sms_url, "GUAHAO_SMS_SECRET", d.sms_secret),
        ("GUAHAO_REALNAME_VERIFIER", "GUAHAO_REALNAME_URL", d.realname_url,
         "GUAHAO_REALNAME_SECRET", d.realname_secret),
    ]
    for chooser, url_setting, url, secret_setting, secret in needs:
        if "http" not in d.adapters.get(chooser, ()):
            continue
        if not url.startswith(("https://", "http://")):
            found.append(
                f"{url_setting} 未设置或不是 http(s) 地址（{chooser}=http 需要） / "
                f"{url_setting} is missing or not an http(s) URL (needed by {chooser}=http)"
            )
        if len(secret) < 16:
            found.append(
                f"{secret_setting} 未设置或少于 16 个字符（{chooser}=http 需要） / "
                f"{secret_setting} is missing or shorter than 16 characters (needed by {chooser}=http)"
            )
    return found


def _message_channel_problems(d: Deployment) -> list[str]:
    """The patients' message channels exist, and sign-in codes through Aliyun SendSms
    (GUAHAO_SMS_CHANNEL=aliyun) have the provider's keys, sign name and template: without them no
    patient could sign in. A hospital that turns SMS messages on without keys is reported by
    `guahao check --deploy` instead (guahao.E011): messages still reach the in-app list."""
    from guahao.notifications.channels import CHANNELS

    found = [
        f"GUAHAO_MESSAGE_CHANNELS 中的 {name} 不存在（可选：{', '.join(sorted(CHANNELS))}） / "
        f"{name} in GUAHAO_MESSAGE_CHANNELS does not exist (choose from: {', '.join(sorted(CHANNELS))})"
        for name in d.message_channels
        if name not in CHANNELS and "." not in name
    ]
    needs: list[tuple[str, str]] = []
    if "aliyun" in d.adapters.get("GUAHAO_SMS_CHANNEL", ()):
        needs += [
            ("GUAHAO_SMS_ACCESS_KEY_ID", d.sms_access_key_id),
            ("GUAHAO_SMS_ACCESS_KEY_SECRET", d.sms_access_key_secret),
            ("GUAHAO_SMS_SIGN_NAME", d.sms_sign_name),
            ("GUAHAO_SMS_CODE_TEMPLATE", d.sms_code_template),
        ]
    for setting in dict.fromkeys(name for name, value in needs if not value):
        found.append(f"{setting} 未设置（短信服务需要） / {setting} is missing (needed by the SMS provider)")
    return found


def refusal_text(found: list[str]) -> str:
    lines = [
        "guahao 拒绝启动：配置不安全或有误 / guahao refuses to start: the configuration is unsafe or wrong",
        *(f"  - {p}" for p in found),
        "开发时请设置 GUAHAO_ENV=development / For development, set GUAHAO_ENV=development",
    ]
    return "\n".join(lines)


def check_start(settings: object) -> None:
    """Refuse to start (UnsafeStart) when problems() finds any; in development, say so in the log."""
    found = problems(Deployment.from_settings(settings), registries())
    if found:
        raise UnsafeStart(found)
    if settings.ENV == DEVELOPMENT:
        log.warning(DEVELOPMENT_WARNING)


def refuse(exc: UnsafeStart) -> NoReturn:
    """End the process with the reasons on stderr: a message for the operator, not a traceback."""
    print(exc, file=sys.stderr)
    sys.stderr.flush()
    raise SystemExit(EXIT_REFUSED)


def is_development() -> bool:
    from django.conf import settings

    return settings.ENV == DEVELOPMENT
