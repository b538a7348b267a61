"""The SMS simulator as a real process for tests: `running_sms_simulator()` starts
`python -m guahao.notifications.sms.simulator` on a free loopback port, waits for its first line,
and stops it on exit, whatever the test did.

    with running_sms_simulator() as sim:
        sim.use_in(settings)                        # GUAHAO_SMS_ENDPOINT and keys → the simulator
        sim.fault("throttling")
        sim.messages(phone="13912345678")
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from guahao.notifications.sms.aliyun import AliyunSmsClient
from guahao.notifications.sms.simulator.provider import DEMO_SIGNS, DEMO_TEMPLATES
from guahao.simulators import ControlError, SimulatorProcess, running

__all__ = ["ControlError", "SmsSimulator", "running_sms_simulator"]

ACCESS_KEY_ID = "LTAI-test-key"
ACCESS_KEY_SECRET = "sms-test-secret"
SIGN_NAME = DEMO_SIGNS[0]
CODE_TEMPLATE = next(iter(DEMO_TEMPLATES))  # the sign-in code: ${code}


class SmsSimulator(SimulatorProcess):
    def __init__(self, *, url: str, keys: dict[str, str], process: subprocess.Popen[str]) -> None:
        super().__init__(url=url, process=process)
        self.keys = keys

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


@contextmanager
def running_sms_simulator(*, keys: dict[str, str] | None = None, state: Path | None = None) -> Iterator[SmsSimulator]:
    keys = keys or {ACCESS_KEY_ID: ACCESS_KEY_SECRET}
    args = ["--host", "127.0.0.1", "--port", "0", "--keys", json.dumps(keys)]
    if state is not None:
        args += ["--state", str(state)]
    with running(
        "guahao.notifications.sms.simulator", args, lambda process: SmsSimulator(url="", keys=keys, process=process), name="SMS simulator"
    ) as simulator:
        yield simulator
