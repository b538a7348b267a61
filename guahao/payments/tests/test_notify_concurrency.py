"""A captured notification played back ten times at once, and a notification racing the patient's
"我已支付" and the poller: the payment changes once and writes one "payment.paid" event (real
threads, real transactions, on PostgreSQL). Ten freshly signed deliveries: test_notifications."""

from __future__ import annotations

import datetime as dt

import pytest

from guahao import clock
from guahao.notifications.models import OutboxEvent
from guahao.payments import services
from guahao.payments.models import Payment, SeenNonce
from guahao.payments.tests.helpers import accepted, make_hold, pay, refused, start
from guahao.testing import client_send, run_concurrently

THREADS = 10

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def test_ten_concurrent_copies_of_one_captured_request_are_accepted_once(channel, booking_calls):
    payment, _ = start(make_hold(channel))
    captured = pay(payment).signed()
    results = run_concurrently([lambda: client_send(*captured)] * THREADS)

    assert all(ok for ok, _ in results), results
    replies = [reply for _, reply in results]
    assert sum(accepted(payment.provider, r) for r in replies) == 1
    assert (
        sum(refused(payment.provider, r) for r in replies) == THREADS - 1
    )  # the nonce lets one through
    assert Payment.objects.get(id=payment.id).state == Payment.State.PAID
    assert OutboxEvent.objects.filter(topic="payment.paid").count() == 1
    assert SeenNonce.objects.count() == 1
    assert booking_calls == [("complete_paid_hold", payment.id)]


def test_a_notification_racing_the_patients_check_and_the_poller_settles_once(
    channel, booking_calls
):
    payment, _ = start(make_hold(channel))
    delivery = pay(payment)
    signed = []
    for second in range(4):  # the provider's tries, each signed at its own time
        with clock.travel(services.FIRST_POLL + dt.timedelta(seconds=second)):
            signed.append(delivery.signed())
    with clock.travel(
        services.FIRST_POLL + dt.timedelta(seconds=5)
    ):  # the poller's first question is due
        calls = [
            *[lambda s=s: client_send(*s) for s in signed],
            *[lambda: services.refresh_payment(payment_id=payment.id) for _ in range(3)],
            *[services.poll_open_payments for _ in range(3)],
        ]
        results = run_concurrently(calls)

    assert all(ok for ok, _ in results), results
    assert all(accepted(payment.provider, reply) for _, reply in results[:4])
    payment.refresh_from_db()
    assert payment.state == Payment.State.PAID and payment.next_poll_at is None
    assert OutboxEvent.objects.filter(topic="payment.paid").count() == 1
