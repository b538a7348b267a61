"""An order paid at the provider whose notification never arrives is not closed in our books when
the provider refuses both the close (it is paid) and then, for some other reason than "no such
order", the query: nothing is known, so the caller tries again, and the next try settles it.
(Found by the model-based test: such an order used to be marked closed, the patient's money held
with neither a registration nor a refund; only the next day's reconciliation showed it.)"""

from __future__ import annotations

import pytest

from guahao.errors import Conflict, UpstreamUnavailable
from guahao.payments import services as payments
from guahao.payments.models import Payment
from guahao.payments.providers.base import ProviderRefused, TradeStatus
from guahao.payments.providers.faulty import FaultyProvider
from guahao.payments.tests.helpers import CHANNELS, make_hold, pay, start
from guahao.testing import wrap_provider

pytestmark = pytest.mark.django_db


class QueryRefused(FaultyProvider):
    def query_order(self, out_trade_no: str) -> TradeStatus:
        raise ProviderRefused("query refused", code="SYSTEM_BUSY")


@pytest.mark.parametrize("channel", CHANNELS)
def test_a_paid_order_is_not_closed_when_the_query_is_refused(booking_calls, monkeypatch, channel):
    hold = make_hold(channel)
    payment, _ = start(hold)
    pay(payment)  # paid at the provider; its notification does not arrive

    with monkeypatch.context() as patched:
        wrap_provider(patched, QueryRefused)
        with pytest.raises(UpstreamUnavailable):
            payments.close_open_orders(hold_id=hold.id)
    payment.refresh_from_db()
    assert payment.state == Payment.State.CREATED  # still open: the poller and tidy-up ask again

    with pytest.raises(Conflict) as refused:
        payments.close_open_orders(hold_id=hold.id)
    assert refused.value.code == "payment_already_paid"
    payment.refresh_from_db()
    assert payment.state == Payment.State.PAID
