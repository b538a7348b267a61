"""The real delivery path (HTTP to a running server) and the console pages."""

from __future__ import annotations

import pytest

from guahao.payments import services
from guahao.payments.models import Payment
from guahao.payments.providers import sandbox
from guahao.payments.tests.helpers import make_hold


@pytest.mark.django_db(transaction=True)
def test_notifications_reach_a_running_server_over_http(live_server, settings, booking_calls):
    settings.PUBLIC_URL = live_server.url
    payment, params = services.start_payment(hold=make_hold())
    assert params.pay_url.startswith(live_server.url)
    sandbox.pay(payment.out_trade_no)

    assert sandbox.deliver_due_notifications(send=sandbox.http_send) == 1
    payment.refresh_from_db()
    assert payment.state == Payment.State.PAID
    assert booking_calls == [("complete_paid_hold", payment.id)]
    # A rejected notification comes back as its status, not as an exception.
    assert sandbox.http_send(f"{live_server.url}/api/v1/payments/notify/sandbox", {}, b"{}") == 401


@pytest.mark.django_db
def test_the_console_lists_and_searches_payments_and_refunds(admin_client, hold):
    payment, _ = services.start_payment(hold=hold)
    listing = admin_client.get("/admin/payments/payment/", {"q": payment.out_trade_no, "state__exact": "created"})
    assert listing.status_code == 200
    assert payment.out_trade_no in listing.content.decode()
    assert admin_client.get(f"/admin/payments/payment/{payment.id}/change/").status_code == 200
    assert admin_client.get("/admin/payments/payment/add/").status_code == 403
    assert admin_client.get("/admin/payments/refund/", {"q": "RF"}).status_code == 200
