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

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from guahao.simulators import ControlError, SimulatorProcess, running
from guahao.wechat.simulator import DEMO_APP_ID, DEMO_APP_SECRET

__all__ = ["ControlError", "WechatSimulator", "running_wechat_simulator"]


class WechatSimulator(SimulatorProcess):
    def __init__(self, *, url: str, process: subprocess.Popen[str]) -> None:
        super().__init__(url=url, process=process)
        self.app_id, self.app_secret = DEMO_APP_ID, DEMO_APP_SECRET

    def official_account(self, hospital: Any, *, enabled: bool = True) -> Any:
        """The hospital's OfficialAccount with the simulator's app, at the simulator's address."""
        from guahao.wechat.models import OfficialAccount

        official, _ = OfficialAccount.objects.update_or_create(
            hospital=hospital,
            defaults={"app_id": self.app_id, "app_secret": self.app_secret, "api_base": self.url, "oauth_base": self.url, "enabled": enabled},
        )
        return official

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


@contextmanager
def running_wechat_simulator(*, state: Path | None = None) -> Iterator[WechatSimulator]:
    args = ["--host", "127.0.0.1", "--port", "0"]
    if state is not None:
        args += ["--state", str(state)]
    with running("guahao.wechat.simulator", args, lambda process: WechatSimulator(url="", process=process), name="WeChat simulator") as simulator:
        yield simulator
