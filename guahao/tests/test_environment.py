"""Development vs production: each rule of guahao.environment on its own (the pure function), then a
few real starts (a command, the worker, the WSGI module, gunicorn) that must refuse in production."""

from __future__ import annotations

import dataclasses
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command

from guahao import environment, pii
from guahao.environment import DEV_SECRET_KEY, Deployment, problems
from guahao.payments import providers

STRONG_SECRET = "kV9#pQ2!zL7@wX4$mN8%rT1^bY6&cH3*fJ5(dG0)sA-eU_iO+yW"
DATA_KEY = "3f9a1c7e5b2d4086a1e9c3b7d5f20814"
INDEX_KEY = "9e4b7a2c1f8d3065b4a7e2c9d1f60358c2a4e6b8d0f13579"

KNOWN = environment.registries()

SAFE = Deployment(
    env="production",
    secret_key=STRONG_SECRET,
    data_key=DATA_KEY,
    index_key=INDEX_KEY,
    debug=False,
    adapters={
        "GUAHAO_HIS_ADAPTER": ("local_pool",),
        "GUAHAO_SMS_CHANNEL": ("http",),
        "GUAHAO_REALNAME_VERIFIER": ("http",),
    },
    sms_url="https://sms.hospital.example/send",
    sms_secret="s" * 8 + "ms-shared-secret",
    realname_url="https://realname.hospital.example/verify",
    realname_secret="r" * 8 + "ealname-shared-secret",
)


def with_(**changes: object) -> Deployment:
    return dataclasses.replace(SAFE, **changes)


def with_adapter(setting: str, *names: str, **changes: object) -> Deployment:
    return with_(adapters={**SAFE.adapters, setting: names}, **changes)


def one_problem(d: Deployment) -> str:
    found = problems(d, KNOWN)
    assert len(found) == 1, found
    return found[0]


def test_a_safe_production_deployment_starts():
    assert problems(SAFE, KNOWN) == []


def test_development_allows_sandboxes_the_log_channel_and_generated_keys():
    development = with_(
        env="development",
        secret_key=DEV_SECRET_KEY,
        data_key="",
        index_key="",
        debug=True,
        adapters={
            "GUAHAO_HIS_ADAPTER": ("local_pool",),
            "GUAHAO_SMS_CHANNEL": ("log",),
            "GUAHAO_REALNAME_VERIFIER": ("sandbox",),
        },
        sms_url="",
        sms_secret="",
    )
    assert problems(development, KNOWN) == []


def test_the_test_run_itself_is_development(settings):
    assert settings.ENV == "development"


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        (
            DEV_SECRET_KEY,
            "GUAHAO_SECRET_KEY 未设置或为开发默认值 / GUAHAO_SECRET_KEY is missing or the development default",
        ),
        ("", "GUAHAO_SECRET_KEY is missing"),
        (STRONG_SECRET[:49], "GUAHAO_SECRET_KEY is weak"),
        ("abcd" * 20, "GUAHAO_SECRET_KEY is weak"),
        ("k" * 64, "GUAHAO_SECRET_KEY is weak"),
        ("django-insecure-" + STRONG_SECRET, "GUAHAO_SECRET_KEY is weak"),
    ],
    ids=[
        "development-default",
        "empty",
        "49-characters",
        "4-distinct",
        "one-repeated",
        "django-insecure",
    ],
)
def test_production_refuses_a_missing_or_weak_secret_key(key, expected):
    assert expected in one_problem(with_(secret_key=key))


@pytest.mark.parametrize(
    ("setting", "field", "value", "expected"),
    [
        ("GUAHAO_DATA_KEY", "data_key", "", "is missing"),
        ("GUAHAO_DATA_KEY", "data_key", DATA_KEY[:30], "must be 32 hex characters"),
        ("GUAHAO_DATA_KEY", "data_key", DATA_KEY + "00", "must be 32 hex characters"),
        ("GUAHAO_DATA_KEY", "data_key", "z" * 32, "must be 32 hex characters"),
        ("GUAHAO_DATA_KEY", "data_key", "0" * 32, "is weak"),
        ("GUAHAO_DATA_KEY", "data_key", "ab" * 16, "is weak"),
        ("GUAHAO_DATA_KEY", "data_key", "0123456" * 4 + "0123", "is weak"),
        ("GUAHAO_INDEX_KEY", "index_key", "", "is missing"),
        ("GUAHAO_INDEX_KEY", "index_key", INDEX_KEY[:30], "at least 32"),
        ("GUAHAO_INDEX_KEY", "index_key", INDEX_KEY[:33], "at least 32"),
        ("GUAHAO_INDEX_KEY", "index_key", "00000000" * 6, "is weak"),
        ("GUAHAO_INDEX_KEY", "index_key", "abab" * 12, "is weak"),
    ],
)
def test_production_refuses_missing_or_weak_personal_data_keys(setting, field, value, expected):
    problem = one_problem(with_(**{field: value}))
    assert problem.startswith(setting)
    assert f"/ {setting} " in problem and expected in problem


def test_production_takes_a_longer_index_key_and_either_case():
    assert problems(with_(index_key=INDEX_KEY + "ab", data_key=DATA_KEY.upper()), KNOWN) == []


def test_the_index_key_must_differ_from_the_data_key():
    assert "GUAHAO_INDEX_KEY must differ from GUAHAO_DATA_KEY" in one_problem(
        with_(index_key=DATA_KEY.upper())
    )


@pytest.mark.parametrize(
    "setting", ["GUAHAO_HIS_ADAPTER", "GUAHAO_SMS_CHANNEL", "GUAHAO_REALNAME_VERIFIER"]
)
@pytest.mark.parametrize("env", ["production", "development"])
def test_an_adapter_name_that_does_not_exist_refuses_to_start(setting, env):
    problem = one_problem(with_adapter(setting, "nosuch", env=env))
    assert problem.startswith(f"{setting}=nosuch 不存在")
    assert f"{setting}=nosuch does not exist (choose from: " in problem


@pytest.mark.parametrize(
    ("setting", "name"),
    [
        ("GUAHAO_SMS_CHANNEL", "log"),
        ("GUAHAO_REALNAME_VERIFIER", "sandbox"),
    ],
)
def test_production_refuses_sandboxes_and_the_log_sms_channel(setting, name):
    d = with_adapter(setting, name)
    if setting == "GUAHAO_SMS_CHANNEL":
        d = dataclasses.replace(d, sms_url="", sms_secret="")
    if setting == "GUAHAO_REALNAME_VERIFIER":
        d = dataclasses.replace(d, realname_url="", realname_secret="")
    assert one_problem(d) == (
        f"{setting}={name} 仅供开发和测试，不能用于生产 / "
        f"{setting}={name} is for development and tests only, not production"
    )


@pytest.mark.parametrize(("channel", "provider"), sorted(providers.PROVIDER_OF_CHANNEL.items()))
def test_production_never_pays_through_the_sandbox_merchant(db, settings, channel, provider):
    assert providers.sandbox_merchant(provider) is not None  # the test run is development
    settings.ENV = "production"
    assert providers.sandbox_merchant(provider) is None
    # A hospital without a merchant account takes no money…
    with pytest.raises(providers.NoMerchant):
        providers.merchant_for(hospital_id=0, channel=channel)
    # …nor is a notification to the sandbox's merchant read…
    with pytest.raises(providers.NoMerchant):
        providers.merchant_by_key(provider, providers.SANDBOX)
    assert providers.all_merchants() == []  # …nor are its bills reconciled


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            {"sms_url": ""},
            "GUAHAO_SMS_URL is missing or not an http(s) URL (needed by GUAHAO_SMS_CHANNEL=http)",
        ),
        ({"sms_url": "sms.example/send"}, "GUAHAO_SMS_URL is missing or not an http(s) URL"),
        ({"sms_secret": ""}, "GUAHAO_SMS_SECRET is missing or shorter than 16 characters"),
        ({"realname_url": ""}, "GUAHAO_REALNAME_URL is missing"),
        (
            {"realname_secret": "short"},
            "GUAHAO_REALNAME_SECRET is missing or shorter than 16 characters",
        ),
    ],
)
def test_the_http_adapters_need_their_url_and_secret_in_production(changes, expected):
    assert expected in one_problem(with_(**changes))


def test_message_channels_must_exist_and_sign_in_codes_through_aliyun_need_its_keys():
    assert "GUAHAO_MESSAGE_CHANNELS 中的 weixin 不存在" in one_problem(with_(message_channels=("wechat", "weixin")))
    assert problems(with_(message_channels=()), KNOWN) == []  # the in-app list only
    # SMS messages without keys: the deploy check names the hospitals that turned them on.
    assert problems(with_(message_channels=("wechat", "sms")), KNOWN) == []
    keys = {"sms_access_key_id": "LTAI5tKey", "sms_access_key_secret": "secret-of-the-key"}
    codes = with_adapter("GUAHAO_SMS_CHANNEL", "aliyun", **keys)
    assert [p.split(" / ")[0] for p in problems(codes, KNOWN)] == [
        "GUAHAO_SMS_SIGN_NAME 未设置（短信服务需要）",
        "GUAHAO_SMS_CODE_TEMPLATE 未设置（短信服务需要）",
    ]


def test_debug_pages_are_refused_in_production():
    assert (
        one_problem(with_(debug=True))
        == "GUAHAO_DEBUG 在生产环境必须关闭 / GUAHAO_DEBUG must be off in production"
    )


@pytest.mark.parametrize("env", ["staging", "dev", "Production"])
def test_an_unknown_environment_refuses_to_start_and_is_held_to_production_rules(env):
    found = problems(with_(env=env, debug=True), KNOWN)
    assert found[0].startswith(f"GUAHAO_ENV={env!r} 无效")
    assert f"GUAHAO_ENV={env!r} is not development or production" in found[0]
    assert "GUAHAO_DEBUG must be off in production" in found[1]


def test_every_problem_is_listed_at_once_in_chinese_and_english():
    unsafe = with_(
        secret_key=DEV_SECRET_KEY,
        data_key="",
        index_key="0" * 32,
        adapters={
            "GUAHAO_HIS_ADAPTER": ("nosuch",),
            "GUAHAO_SMS_CHANNEL": ("log",),
            "GUAHAO_REALNAME_VERIFIER": ("sandbox",),
        },
    )
    found = problems(unsafe, KNOWN)
    named = [p.split(" ", 1)[0].split("=")[0] for p in found]
    assert named == [
        "GUAHAO_SECRET_KEY",
        "GUAHAO_DATA_KEY",
        "GUAHAO_INDEX_KEY",
        "GUAHAO_HIS_ADAPTER",
        "GUAHAO_SMS_CHANNEL",
        "GUAHAO_REALNAME_VERIFIER",
    ]
    for problem in found:
        chinese, english = problem.split(" / ", 1)
        assert re.search(r"[\u4e00-\u9fff]", chinese)
        assert not re.search(r"[\u4e00-\u9fff]", english)


def test_generated_keys_are_refused_outside_development(settings):
    settings.ENV = "production"
    with pytest.raises(ImproperlyConfigured, match="GUAHAO_DATA_KEY is missing"):
        pii._dev_key("data")


def test_the_token_command_works_only_in_development(settings):
    settings.ENV = "production"
    with pytest.raises(CommandError) as refused:
        call_command("token", phone="13800138000", stdout=io.StringIO())
    assert "只能在开发模式" in str(refused.value)
    assert "development mode (GUAHAO_ENV=development) only" in str(refused.value)


def test_the_api_docs_say_development_mode(client):
    info = client.get("/api/v1/openapi.json").json()["info"]
    assert "开发模式" in info["title"]
    assert "切勿用于真实患者" in info["description"]


# --- real starts ----------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]


def start(
    tmp_path: Path, *command: str, timeout: int = 60, **env: str
) -> subprocess.CompletedProcess:
    """Run `command` as an operator would: a clean GUAHAO_* environment plus `env`, its own var/."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("GUAHAO_", "DJANGO_"))}
    clean.update(GUAHAO_VAR_DIR=str(tmp_path), **env)
    return subprocess.run(
        command, cwd=ROOT, env=clean, capture_output=True, text=True, timeout=timeout, check=False
    )


def guahao(*args: str) -> tuple[str, ...]:
    return (sys.executable, "-m", "guahao.cli", *args)


def assert_refused(result: subprocess.CompletedProcess, *settings_named: str) -> None:
    assert result.returncode == environment.EXIT_REFUSED, result.stderr
    assert "guahao refuses to start" in result.stderr
    assert "Traceback" not in result.stderr
    for setting in settings_named:
        assert re.search(
            rf"^  - {re.escape(setting)}\S* [^/]*[\u4e00-\u9fff][^/]* / {re.escape(setting)}",
            result.stderr,
            re.M,
        ), (
            setting,
            result.stderr,
        )


def test_an_unset_environment_is_production_and_a_command_refuses_before_touching_the_database(
    tmp_path,
):
    result = start(tmp_path, *guahao("migrate", "--noinput"))
    assert_refused(
        result,
        "GUAHAO_SECRET_KEY",
        "GUAHAO_DATA_KEY",
        "GUAHAO_INDEX_KEY",
        "GUAHAO_SMS_CHANNEL",
        "GUAHAO_REALNAME_VERIFIER",
    )
    assert not (tmp_path / "guahao.sqlite3").exists()


def test_the_worker_refuses_weak_keys_and_an_unknown_adapter(tmp_path):
    result = start(
        tmp_path,
        *guahao("worker", "--once"),
        GUAHAO_ENV="production",
        GUAHAO_SECRET_KEY=STRONG_SECRET,
        GUAHAO_DATA_KEY="0" * 32,
        GUAHAO_INDEX_KEY="ab" * 16,
        GUAHAO_HIS_ADAPTER="nosuch",
    )
    assert_refused(result, "GUAHAO_DATA_KEY", "GUAHAO_INDEX_KEY", "GUAHAO_HIS_ADAPTER")
    assert "GUAHAO_SECRET_KEY" not in result.stderr


def test_an_unknown_environment_name_refuses_to_start(tmp_path):
    assert_refused(start(tmp_path, *guahao("check"), GUAHAO_ENV="staging"), "GUAHAO_ENV")


def test_the_wsgi_module_refuses_to_load(tmp_path):
    result = start(tmp_path, sys.executable, "-c", "import guahao.wsgi", GUAHAO_ENV="production")
    assert_refused(result, "GUAHAO_SECRET_KEY")


def test_gunicorn_halts_instead_of_booting_workers_into_the_refusal(tmp_path):
    result = start(
        tmp_path,
        sys.executable,
        "-m",
        "gunicorn",
        "guahao.wsgi:application",
        "--bind",
        "127.0.0.1:0",
        "--workers",
        "1",
        "--no-control-socket",
    )
    assert result.returncode == environment.EXIT_REFUSED, result.stderr
    assert "GUAHAO_SECRET_KEY is missing or the development default" in result.stderr
    assert "App failed to load" in result.stderr
    assert "Traceback" not in result.stderr


def test_development_starts_and_says_so_once(tmp_path):
    result = start(tmp_path, *guahao("check"), GUAHAO_ENV="development")
    assert result.returncode == 0, result.stderr
    assert result.stderr.count(environment.DEVELOPMENT_WARNING) == 1
    assert '"level": "WARNING"' in result.stderr
