"""The WeChat simulator as a real process for tests: `running_wechat_simulator()` starts
`python -m guahao.wechat.simulator` on a free loopback port, waits for its first line, and stops it
on exit, whatever the test did.

    with running_wechat_simulator() as sim:
        official = sim.official_account(hospital)        # an OfficialAccount pointed at it
        sim.follow("oPatient1")
        sim.template("TPL1", ["thing1", "time2"])
        sim.messages(touser="oPatient1")
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

from guahao.wechat.simulator import DEMO_APP_ID, DEMO_APP_SECRET

START_TIMEOUT_SECONDS = 10.0
_PROJECT_ROOT = Path(__file__).resolve().parents[2]


class ControlError(Exception):
    def __init__(self, status: int, document: Any):
        super().__init__(f"{status}: {document}")
        self.status, self.document = status, document


class WechatSimulator:
    def __init__(self, *, url: str, process: subprocess.Popen[str]) -> None:
        self.url, self.process = url, process
        self.app_id, self.app_secret = DEMO_APP_ID, DEMO_APP_SECRET

    def official_account(self, hospital: Any, *, enabled: bool = True) -> Any:
        """The hospital's OfficialAccount with the simulator's app, at the simulator's address."""
        from guahao.wechat.models import OfficialAccount

        official, _ = OfficialAccount.objects.update_or_create(
            hospital=hospital,
            defaults={"app_id": self.app_id, "app_secret": self.app_secret, "api_base": self.url, "oauth_base": self.url, "enabled": enabled},
        )
        return official

    def control(self, method: str, path: str, document: dict[str, Any] | None = None) -> Any:
        data = json.dumps(document or {}).encode() if method == "POST" else None
        request = urllib.request.Request(f"{self.url}/_control/{path.lstrip('/')}", data=data, method=method, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            raise ControlError(error.code, json.loads(error.read() or b"null")) from None

    def follow(self, openid: str) -> Any:
        return self.control("POST", "follow", {"appid": self.app_id, "openid": openid})

    def unfollow(self, openid: str) -> Any:
        return self.control("POST", "unfollow", {"appid": self.app_id, "openid": openid})

    def template(self, template_id: str, keys: list[str]) -> Any:
        return self.control("POST", "templates", {"appid": self.app_id, "template_id": template_id, "keys": keys})

    def code_for(self, openid: str) -> str:
        """A 网页授权 code for this openid, as WeChat gives the H5 after the authorize page."""
        return self.control("POST", "codes", {"appid": self.app_id, "openid": openid})["code"]

    def expire_tokens(self) -> int:
        return self.control("POST", "tokens/expire", {"appid": self.app_id})["expired"]

    def fault(self, fault: str, *, api: str = "", times: int = 1, latency_ms: int | None = None) -> Any:
        document: dict[str, Any] = {"fault": fault, "api": api, "times": times}
        if latency_ms is not None:
            document["latency_ms"] = latency_ms
        return self.control("POST", "faults", document)

    def messages(self, *, touser: str = "") -> list[dict[str, Any]]:
        return self.control("GET", f"messages?touser={touser}" if touser else "messages")["messages"]

    def calls(self) -> dict[str, int]:
        """How often each API was called: token, send, oauth."""
        return self.control("GET", "state")["calls"]

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
def running_wechat_simulator(*, state: Path | None = None) -> Iterator[WechatSimulator]:
    command = [sys.executable, "-m", "guahao.wechat.simulator", "--host", "127.0.0.1", "--port", "0"]
    if state is not None:
        command += ["--state", str(state)]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(_PROJECT_ROOT), os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=_PROJECT_ROOT, env=environment)
    sim = WechatSimulator(url="", process=process)
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
        raise RuntimeError(f"the WeChat simulator did not start (exit status {process.poll()}): {line[0] if line else 'no output'}")
    return line[0].split("listening on ", 1)[1].split()[0]
