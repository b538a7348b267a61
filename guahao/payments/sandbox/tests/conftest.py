"""Fixtures of the sandbox tests: keys generated once, a clock the test moves, a gateway served
on a free loopback port, and the real SDKs configured against it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alipay import AliPay
from wechatpayv3 import WeChatPay

from guahao.payments.sandbox import SandboxGateway, SandboxKeys, running_gateway
from guahao.payments.sandbox.tests.helpers import FakeClock, alipay_client, wechat_client


@pytest.fixture(scope="session")
def keys() -> SandboxKeys:
    return SandboxKeys.generate()


@pytest.fixture(scope="session")
def other_keys() -> SandboxKeys:
    """Someone else's keys: a forger's."""
    return SandboxKeys.generate()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def gw(keys: SandboxKeys, clock: FakeClock) -> Iterator[SandboxGateway]:
    with running_gateway(keys, now=clock) as gateway:
        yield gateway


@pytest.fixture
def wx(keys: SandboxKeys, gw: SandboxGateway) -> WeChatPay:
    return wechat_client(keys, gw)


@pytest.fixture
def ali(keys: SandboxKeys, gw: SandboxGateway) -> AliPay:
    return alipay_client(keys, gw)
