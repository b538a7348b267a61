"""Limits are shared by every process: two real servers on one database (and, when configured,
one Redis) answer twenty sign-in code requests from one address as one server would."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator

import pytest

from guahao.limits.tests.test_limits import REDIS_URL


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def var_dir(tmp_path_factory) -> str:
    """A migrated SQLite database of its own, shared by the two servers of each test."""
    path = tmp_path_factory.mktemp("two-servers")
    subprocess.run(
        [sys.executable, "-m", "guahao.cli", "migrate", "--noinput"],
        env=_env(str(path)),
        check=True,
        capture_output=True,
        timeout=120,
    )
    return str(path)


def _env(var_dir: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUAHAO_")}
    env.update(
        GUAHAO_ENV="development",
        GUAHAO_VAR_DIR=var_dir,
        GUAHAO_LOG_LEVEL="WARNING",
        DJANGO_SETTINGS_MODULE="guahao.settings",
        **extra,
    )
    return env


@pytest.fixture
def two_servers(request, var_dir) -> Iterator[list[str]]:
    extra = {}
    if request.param == "redis":
        extra = {"GUAHAO_REDIS_URL": REDIS_URL, "GUAHAO_REDIS_PREFIX": f"guahao-test-{uuid.uuid4().hex}:"}
    ports = [_free_port(), _free_port()]
    servers = [
        subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "guahao.wsgi:application",
             "--bind", f"127.0.0.1:{port}", "--workers", "1"],
            env=_env(var_dir, **extra),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for port in ports
    ]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        for url in urls:
            _wait_until_up(url)
        yield urls
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            server.wait(timeout=15)


def _wait_until_up(url: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url + "/healthz", timeout=2).read()
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError):  # a worker still booting
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _ask_code(url: str, phone: str) -> tuple[int, dict, str | None]:
    request = urllib.request.Request(
        url + "/api/v1/auth/sms-code",
        data=json.dumps({"phone": phone}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response), response.headers.get("Retry-After")
    except urllib.error.HTTPError as error:
        return error.code, json.load(error), error.headers.get("Retry-After")


@pytest.mark.parametrize("two_servers", ["database", "redis"], indirect=True)
def test_twenty_codes_from_one_address_across_two_servers(two_servers) -> None:
    prefix = 13900000000 + int(uuid.uuid4().int % 10_000) * 100
    # Windows are whole hours: never start seconds before one ends.
    if (left := 3600 - time.time() % 3600) < 10:
        time.sleep(left + 0.5)
    answers = [_ask_code(two_servers[i % 2], str(prefix + i)) for i in range(20)]
    statuses = [status for status, _, _ in answers]

    # The default sms_code_ip limit is 10 an hour, counted across both servers.
    assert statuses == [200] * 10 + [429] * 10, statuses
    for _status, body, retry_after in answers[10:]:
        assert body["code"] == "rate_limited"
        assert body["message"].startswith("获取验证码过于频繁")
        assert retry_after is not None and 0 < int(retry_after) <= 3600
