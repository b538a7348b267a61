"""The real delivery path (the sandbox gateway's HTTP POST to a running server) and the console
pages of payments."""

from __future__ import annotations

import pytest

from guahao.payments.models import Payment
from guahao.payments.sandbox import http_send
from guahao.payments.tests.helpers import make_hold, pay, start, trade_delivery
from guahao.testing import payment_sandbox


@pytest.mark.django_db(transaction=True)
def test_notifications_reach_a_running_server_over_http(
    live_server, settings, channel, booking_calls
):
    settings.PUBLIC_URL = live_server.url
    payment, _ = start(make_hold(channel))
    delivery = pay(payment)
    assert delivery.url == f"{live_server.url}/api/v1/payments/notify/{payment.provider}/sandbox"

    for _ in range(20):  # older tests' due notifications go first (to servers long gone)
        if (
            payment_sandbox().deliver_due(send=http_send) == 0
            or trade_delivery(payment).delivered_at
        ):
            break
    payment.refresh_from_db()
    assert payment.state == Payment.State.PAID
    assert booking_calls == [("complete_paid_hold", payment.id)]
    (delivered,) = payment_sandbox().notifications(payment.out_trade_no)
    assert delivered.delivered_at is not None and delivered.last_status == 200
    # A refused notification comes back as its status and body, not as an exception.
    status, body = http_send(delivery.url, {"Content-Type": "application/json"}, b"{}")
    assert (status, body) == ((401, b'{"code":"FAIL","message":"\xe9\xaa\x8c\xe7\xad\xbe\xe5\xa4\xb1\xe8\xb4\xa5"}')
                              if payment.provider == "wechatpay" else (400, b"fail"))  # fmt: skip


@pytest.mark.django_db
def test_the_console_lists_and_searches_payments_and_refunds(admin_client, channel):
    payment, _ = start(make_hold(channel))
    listing = admin_client.get(
        "/admin/payments/payment/", {"q": payment.out_trade_no, "state__exact": "created"}
    )
    assert listing.status_code == 200
    html = listing.content.decode()
    assert payment.out_trade_no in html
    assert ("微信支付" if channel == "wechat" else "支付宝") in html
    assert admin_client.get(f"/admin/payments/payment/{payment.id}/change/").status_code == 200
    assert admin_client.get("/admin/payments/payment/add/").status_code == 403
    assert admin_client.get("/admin/payments/refund/", {"q": "RF"}).status_code == 200
