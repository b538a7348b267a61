"""The sandbox cashier page: where a patient "pays" in development and tests."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from guahao.payments import services
from guahao.payments.models import SandboxNotification, SandboxTrade
from guahao.payments.providers import provider

pytestmark = pytest.mark.django_db


@pytest.fixture
def trade_no(hold) -> str:
    payment, params = services.start_payment(hold=hold)
    assert params.pay_url.endswith(f"/sandbox/pay/{payment.out_trade_no}")
    return payment.out_trade_no


def page(trade_no: str) -> str:
    return f"/sandbox/pay/{trade_no}"


def post_json(trade_no: str, body: dict | None = None):
    return Client().post(page(trade_no), json.dumps(body or {}), content_type="application/json")


def test_the_page_shows_the_amount_in_yuan_and_both_buttons(trade_no):
    response = Client().get(page(trade_no))
    assert response.status_code == 200
    html = response.content.decode()
    assert "模拟支付（沙箱）" in html
    assert "10.00" in html
    assert "挂号费" in html
    assert "确认支付" in html and "模拟支付失败" in html
    assert 'name="viewport"' in html


def test_posting_json_pays_and_queues_exactly_one_notification(trade_no):
    response = post_json(trade_no, {"result": "success"})
    assert response.status_code == 200
    assert response.json()["trade_state"] == "SUCCESS"
    assert post_json(trade_no).json()["trade_state"] == "SUCCESS"  # paying again changes nothing
    assert SandboxNotification.objects.filter(trade__out_trade_no=trade_no).count() == 1


def test_a_simulated_failure_leaves_the_trade_unpaid(trade_no):
    response = post_json(trade_no, {"result": "fail"})
    assert response.status_code == 200
    assert response.json()["trade_state"] == "NOTPAY"
    assert provider("sandbox").query_order(trade_no).state == "NOTPAY"
    assert not SandboxNotification.objects.exists()


def test_the_form_pays_and_shows_the_outcome(trade_no):
    response = Client().post(page(trade_no), {"result": "success"})
    assert response.status_code == 200
    assert "支付成功" in response.content.decode()
    again = Client().get(page(trade_no)).content.decode()
    assert "该订单已支付" in again and "确认支付" not in again


def test_the_form_failure_shows_it_may_be_paid_again(trade_no):
    response = Client().post(page(trade_no), {"result": "fail"})
    html = response.content.decode()
    assert "支付失败" in html and "确认支付" in html
    assert SandboxTrade.objects.get(out_trade_no=trade_no).state == SandboxTrade.State.NOTPAY


def test_a_closed_order_cannot_be_paid(trade_no):
    provider("sandbox").close_order(trade_no)
    response = post_json(trade_no)
    assert response.status_code == 409
    assert "订单已关闭" in response.json()["message"]
    assert Client().post(page(trade_no), {"result": "success"}).status_code == 409


def test_an_unknown_order_is_404(db):
    assert Client().get(page("GH0000000000")).status_code == 404
    response = post_json("GH0000000000")
    assert response.status_code == 404 and response.json()["code"] == "not_found"


def test_a_bad_result_is_400(trade_no):
    assert post_json(trade_no, {"result": "maybe"}).status_code == 400
