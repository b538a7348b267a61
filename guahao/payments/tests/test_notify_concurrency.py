"""Ten deliveries of one paid notification at the same moment change the payment once and write one
"payment.paid" event (real threads, real transactions)."""

from __future__ import annotations

import threading

import pytest
from django.db import connections

from guahao.notifications.models import OutboxEvent
from guahao.payments import services
from guahao.payments.models import Payment
from guahao.payments.providers.sandbox import signed_headers
from guahao.payments.tests.helpers import body_of, make_hold, pay_in_sandbox, post_notification

THREADS = 10


def deliver_concurrently(body: bytes, headers_for: list[dict[str, str]]) -> list[int]:
    barrier = threading.Barrier(len(headers_for))
    statuses: list[int] = []
    errors: list[BaseException] = []

    def deliver(headers: dict[str, str]) -> None:
        try:
            barrier.wait()
            statuses.append(post_notification(body, headers).status_code)
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=deliver, args=(h,)) for h in headers_for]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    return statuses


@pytest.mark.django_db(transaction=True)
def test_ten_concurrent_resends_make_one_paid_transition_and_one_event(booking_calls):
    payment, _ = services.start_payment(hold=make_hold())
    body = body_of(pay_in_sandbox(payment))
    # As a provider re-sending: the same event, each delivery signed with its own nonce.
    statuses = deliver_concurrently(body, [signed_headers(body) for _ in range(THREADS)])

    assert statuses == [200] * THREADS
    payment.refresh_from_db()
    assert payment.state == Payment.State.PAID
    assert OutboxEvent.objects.filter(topic="payment.paid").count() == 1
    assert booking_calls == [("complete_paid_hold", payment.id)]


@pytest.mark.django_db(transaction=True)
def test_ten_concurrent_copies_of_one_request_are_accepted_once(booking_calls):
    payment, _ = services.start_payment(hold=make_hold())
    body = body_of(pay_in_sandbox(payment))
    headers = signed_headers(body)
    # A captured request played back in parallel: the nonce lets exactly one through.
    statuses = deliver_concurrently(body, [headers] * THREADS)

    assert sorted(statuses) == [200] + [401] * (THREADS - 1)
    assert OutboxEvent.objects.filter(topic="payment.paid").count() == 1
    assert Payment.objects.get(id=payment.id).state == Payment.State.PAID
