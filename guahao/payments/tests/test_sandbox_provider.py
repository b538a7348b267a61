"""The sandbox keeps its own ledger and answers like WeChat Pay v3."""

from __future__ import annotations

import pytest
from django.conf import settings

from guahao.payments.models import SandboxNotification, SandboxRefund, SandboxTrade
from guahao.payments.providers import provider
from guahao.payments.providers.base import OrderRequest, ProviderRefused
from guahao.payments.providers.sandbox import SandboxProvider, TradeClosed, TradeNotFound, pay

pytestmark = pytest.mark.django_db


def order(out_trade_no: str = "GH2611250001", amount_fen: int = 1000) -> OrderRequest:
    return OrderRequest(
        out_trade_no=out_trade_no,
        amount_fen=amount_fen,
        description="测试医院-心内科-挂号费",
        channel="wechat",
        notify_url="http://testserver/api/v1/payments/notify/sandbox",
    )


@pytest.fixture
def gateway() -> SandboxProvider:
    return SandboxProvider()


def test_configured_provider_is_the_sandbox():
    assert provider().name == "sandbox"
    assert isinstance(provider("sandbox"), SandboxProvider)


def test_create_order_returns_an_absolute_pay_url_and_a_notpay_trade(gateway):
    params = gateway.create_order(order())
    assert params.pay_url == f"{settings.PUBLIC_URL}/sandbox/pay/GH2611250001"
    assert params.pay_url.startswith("http")
    trade = SandboxTrade.objects.get(out_trade_no="GH2611250001")
    assert trade.state == SandboxTrade.State.NOTPAY
    assert trade.transaction_id.startswith("4200") and len(trade.transaction_id) == 28


def test_create_order_is_idempotent_for_the_same_amount(gateway):
    first = gateway.create_order(order())
    again = gateway.create_order(order())
    assert first == again
    assert SandboxTrade.objects.count() == 1


def test_create_order_refuses_a_known_order_number_with_another_amount(gateway):
    gateway.create_order(order(amount_fen=1000))
    with pytest.raises(ProviderRefused):
        gateway.create_order(order(amount_fen=2000))


def test_paying_twice_pays_once_and_queues_one_notification(gateway):
    gateway.create_order(order())
    assert pay("GH2611250001").state == "SUCCESS"
    assert pay("GH2611250001").state == "SUCCESS"
    assert SandboxNotification.objects.filter(kind="TRANSACTION.SUCCESS").count() == 1
    assert gateway.query_order("GH2611250001").state == "SUCCESS"


def test_a_declined_payment_leaves_the_trade_unpaid_and_queues_nothing(gateway):
    gateway.create_order(order())
    assert pay("GH2611250001", succeed=False).state == "NOTPAY"
    assert gateway.query_order("GH2611250001").state == "NOTPAY"
    assert not SandboxNotification.objects.exists()


def test_closing_twice_is_fine_and_a_closed_trade_cannot_be_paid(gateway):
    gateway.create_order(order())
    gateway.close_order("GH2611250001")
    gateway.close_order("GH2611250001")
    assert gateway.query_order("GH2611250001").state == "CLOSED"
    with pytest.raises(TradeClosed):
        pay("GH2611250001")


def test_closing_a_paid_trade_is_refused(gateway):
    gateway.create_order(order())
    pay("GH2611250001")
    with pytest.raises(ProviderRefused):
        gateway.close_order("GH2611250001")
    assert gateway.query_order("GH2611250001").state == "SUCCESS"


def test_unknown_trade_is_refused(gateway):
    with pytest.raises(TradeNotFound):
        gateway.query_order("GH0000000000")
    with pytest.raises(TradeNotFound):
        pay("GH0000000000")


def test_refund_is_idempotent_by_refund_number(gateway):
    gateway.create_order(order())
    pay("GH2611250001")
    kwargs = dict(out_trade_no="GH2611250001", out_refund_no="RF1", amount_fen=1000, total_fen=1000, reason="测试")
    first = gateway.refund(**kwargs)
    again = gateway.refund(**kwargs)
    assert first.state == "PROCESSING"
    assert again.out_refund_no == "RF1" and again.amount_fen == 1000
    assert SandboxRefund.objects.count() == 1
    assert SandboxNotification.objects.filter(kind="REFUND.SUCCESS").count() == 1


def test_refunds_beyond_the_paid_amount_are_refused(gateway):
    gateway.create_order(order())
    pay("GH2611250001")
    gateway.refund(out_trade_no="GH2611250001", out_refund_no="RF1", amount_fen=600, total_fen=1000, reason="部分")
    with pytest.raises(ProviderRefused):
        gateway.refund(out_trade_no="GH2611250001", out_refund_no="RF2", amount_fen=500, total_fen=1000, reason="超额")
    gateway.refund(out_trade_no="GH2611250001", out_refund_no="RF3", amount_fen=400, total_fen=1000, reason="余额")
    assert sum(SandboxRefund.objects.values_list("amount_fen", flat=True)) == 1000


def test_an_unpaid_trade_cannot_be_refunded(gateway):
    gateway.create_order(order())
    with pytest.raises(ProviderRefused):
        gateway.refund(out_trade_no="GH2611250001", out_refund_no="RF1", amount_fen=1000, total_fen=1000, reason="x")


def test_the_same_refund_number_for_another_amount_is_refused(gateway):
    gateway.create_order(order())
    pay("GH2611250001")
    gateway.refund(out_trade_no="GH2611250001", out_refund_no="RF1", amount_fen=300, total_fen=1000, reason="x")
    with pytest.raises(ProviderRefused):
        gateway.refund(out_trade_no="GH2611250001", out_refund_no="RF1", amount_fen=400, total_fen=1000, reason="x")
