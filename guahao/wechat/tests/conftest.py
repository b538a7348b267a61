"""One WeChat simulator process per test module; each test starts from its reset state."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from guahao.patients.tests.conftest import sms_outbox  # noqa: F401 - a fixture, re-exported
from guahao.wechat import tokens
from guahao.wechat.testing import WechatSimulator, running_wechat_simulator


@pytest.fixture(scope="module")
def simulator_process() -> Iterator[WechatSimulator]:
    with running_wechat_simulator() as sim:
        yield sim


@pytest.fixture
def sim(simulator_process: WechatSimulator, monkeypatch: pytest.MonkeyPatch) -> WechatSimulator:
    simulator_process.reset()
    monkeypatch.setattr(tokens, "TIMEOUT_SECONDS", 1.0)  # the "timeout" fault costs a second, not five
    return simulator_process
