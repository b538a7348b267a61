"""The SMS simulator as a real process for tests: `running_sms_simulator()` starts
`python -m guahao.notifications.sms.simulator` on a free loopback port, waits for its first line,
and stops it on exit, whatever the test did.

    with running_sms_simulator() as sim:
        sim.use_in(settings)                        # GUAHAO_SMS_ENDPOINT and keys → the simulator
        sim.fault("throttling")
        sim.messages(phone="13912345678")
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from guahao.notifications.sms.aliyun import AliyunSmsClient
from guahao.notifications.sms.simulator.provider import DEMO_SIGNS, DEMO_TEMPLATES

START_TIMEOUT_SECONDS = 10.0
_PROJECT_ROOT = Path(__file__).resolve().parents[3]

ACCESS_KEY_ID = "LTAI-test-key"
ACCESS_KEY_SECRET = "sms-test-secret"
SIGN_NAME = DEMO_SIGNS[0]
CODE_TEMPLATE = next(iter(DEMO_TEMPLATES))  # the sign-in code: ${code}


class ControlError(Exception):
    def __init__(self, status: int, document: Any):
        super().__init__(f"{status}: {document}")
        self.status, self.document = status, document


class SmsSimulator:
    def __init__(self, *, url: str, keys: dict[str, str], process: subprocess.Popen[str]) -> None:
        self.url, self.keys, self.process = url, keys, process

    def client(self, *, access_key_id: str = ACCESS_KEY_ID, secret: str | None = None, timeout: float = 2.0, **options: Any) -> AliyunSmsClient:
        return AliyunSmsClient(
            endpoint=self.url,
            access_key_id=access_key_id,
            access_key_secret=self.keys.get(access_key_id, "") if secret is None else secret,
            timeout=timeout,
            **options,
        )

    def use_in(self, settings: Any, *, access_key_id: str = ACCESS_KEY_ID) -> None:
        """Point the Django settings (pytest-django's `settings` fixture) at this simulator."""
        settings.SMS_ENDPOINT = self.url
        settings.SMS_ACCESS_KEY_ID = access_key_id
        settings.SMS_ACCESS_KEY_SECRET = self.keys[access_key_id]
        settings.SMS_SIGN_NAME = SIGN_NAME
        settings.SMS_CODE_TEMPLATE = CODE_TEMPLATE
        settings.SMS_TIMEOUT = 2.0

    def control(self, method: str, path: str, document: dict[str, Any] | None = None) -> Any:
        data = json.dumps(document or {}).encode() if method == "POST" else None
        request = urllib.request.Request(f"{self.url}/_control/{path.lstrip('/')}", data=data, method=method, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            raise ControlError(error.code, json.loads(error.read() or b"null")) from None

    def fault(self, fault: str, *, times: int = 1, latency_ms: int | None = None) -> Any:
        document: dict[str, Any] = {"fault": fault, "times": times}
        if latency_ms is not None:
            document["latency_ms"] = latency_ms
        return self.control("POST", "faults", document)

    def messages(self, *, phone: str = "") -> list[dict[str, Any]]:
        return self.control("GET", f"messages?phone={phone}" if phone else "messages")["messages"]

    def state(self) -> dict[str, Any]:
        return self.control("GET", "state")

    def add_template(self, code: str, content: str) -> Any:
        return self.control("POST", "templates", {"code": code, "content": content})

    def add_sign(self, name: str) -> Any:
        return self.control("POST", "signs", {"name": name})

    def advance(self, seconds: float) -> Any:
        """Move the provider's rate-limit clock forward (the Timestamp check stays on real time)."""
        return self.control("POST", "clock", {"advance_seconds": seconds})

    def reset(self) -> Any:
        return self.control("POST", "reset")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        if self.process.stdout is not None:
            self.process.stdout.close()


@contextlib.contextmanager
def running_sms_simulator(*, keys: dict[str, str] | None = None, state: Path | None = None) -> Iterator[SmsSimulator]:
    keys = keys or {ACCESS_KEY_ID: ACCESS_KEY_SECRET}
    command = [sys.executable, "-m", "guahao.notifications.sms.simulator", "--host", "127.0.0.1", "--port", "0", "--keys", json.dumps(keys)]
    if state is not None:
        command += ["--state", str(state)]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(_PROJECT_ROOT), os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=_PROJECT_ROOT, env=environment)
    sim = SmsSimulator(url="", keys=keys, process=process)
    try:
        sim.url = _read_url(process)
        yield sim
    finally:
        sim.stop()


def _read_url(process: subprocess.Popen[str]) -> str:
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(process.stdout.readline() if process.stdout else ""), daemon=True)
    reader.start()
    reader.join(START_TIMEOUT_SECONDS)
    if not line or "listening on " not in line[0]:
        raise RuntimeError(f"the SMS simulator did not start (exit status {process.poll()}): {line[0] if line else 'no output'}")
    return line[0].split("listening on ", 1)[1].split()[0]
