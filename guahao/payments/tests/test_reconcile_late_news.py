"""A payment made just before midnight that we learn of after it (the notification failed, the
poller asked in the morning) is on the provider's bill of the day it was paid: our books say so
too, and reconciling both days finds nothing. (Found by the model-based test: we used to record
the moment we learned of it, and the next day's reconciliation reported 本系统已支付，账单中没有此订单
for a payment that was in order.)"""

from __future__ import annotations

import datetime as dt

import pytest

from guahao import clock
from guahao.payments import services as payments
from guahao.payments.models import Discrepancy, Payment, ReconciliationRun
from guahao.payments.reconciliation import run_day
from guahao.payments.tests.helpers import CHANNELS, accepted, deliver, make_hold, pay, start

pytestmark = pytest.mark.django_db

# Days of their own: the sandbox's bill of a day lists every trade paid at it that day.
FIRST_DAY = dt.date(2026, 6, 1)


@pytest.mark.parametrize("news", ["notification", "query"])
@pytest.mark.parametrize("channel", CHANNELS)
def test_a_payment_learned_of_after_midnight_is_on_the_day_it_was_paid(
    booking_calls, channel, news
):
    day = FIRST_DAY + dt.timedelta(days=2 * CHANNELS.index(channel) + 10 * (news == "query"))
    paid_moment = clock.at_local(day, dt.time(23, 50))
    with clock.frozen_at(paid_moment):
        payment, _ = start(make_hold(channel))
        delivery = pay(payment)  # its notification does not get through before midnight
    with clock.frozen_at(clock.at_local(day + dt.timedelta(days=1), dt.time(0, 30))):
        if news == "notification":
            assert accepted(payment.provider, deliver(delivery))
        else:
            payments.refresh_payment(payment_id=payment.id)
    payment.refresh_from_db()
    assert payment.state == Payment.State.PAID
    assert clock.local(payment.paid_at).date() == day
    assert abs(payment.paid_at - paid_moment) < dt.timedelta(minutes=1)

    with clock.frozen_at(clock.at_local(day + dt.timedelta(days=2), dt.time(10, 30))):
        runs = run_day(day=day, his=False) + run_day(day=day + dt.timedelta(days=1), his=False)
    assert all(run.status == ReconciliationRun.Status.OK for run in runs), [r.error for r in runs]
    assert not Discrepancy.objects.filter(out_trade_no=payment.out_trade_no).exists()
