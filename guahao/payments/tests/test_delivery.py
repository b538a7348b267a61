"""The sandbox re-sends a notification on WeChat Pay's schedule until our callback answers 2xx."""

from __future__ import annotations

import datetime as dt

import pytest

from guahao import clock
from guahao.payments import services
from guahao.payments.models import Payment, SandboxNotification
from guahao.payments.providers import sandbox
from guahao.payments.providers.sandbox import RETRY_SCHEDULE, deliver_due_notifications
from guahao.payments.tests.helpers import client_send, pay_in_sandbox

pytestmark = pytest.mark.django_db


class Recorder:
    """A send() answering the given statuses in turn (an exception instance is raised)."""

    def __init__(self, *answers: int | Exception):
        self.answers = list(answers)
        self.calls: list[tuple[str, dict[str, str], bytes]] = []

    def __call__(self, url: str, headers: dict[str, str], body: bytes) -> int:
        self.calls.append((url, headers, body))
        answer = self.answers.pop(0) if self.answers else 200
        if isinstance(answer, Exception):
            raise answer
        return answer


@pytest.fixture
def notification(hold) -> SandboxNotification:
    payment, _ = services.start_payment(hold=hold)
    return pay_in_sandbox(payment)


def test_a_non_2xx_answer_is_retried_on_schedule_until_a_success(notification):
    send = Recorder(500, 502, 503)
    assert deliver_due_notifications(send=send) == 0
    notification.refresh_from_db()
    assert notification.attempts == 1 and notification.last_status == 500

    # Not due again before the first interval (15 s) has passed.
    with clock.travel(RETRY_SCHEDULE[0] - dt.timedelta(seconds=1)):
        deliver_due_notifications(send=send)
    assert len(send.calls) == 1

    elapsed = dt.timedelta(0)
    for interval in RETRY_SCHEDULE[:3]:  # 15 s, 15 s, 30 s
        elapsed += interval
        with clock.travel(elapsed):
            deliver_due_notifications(send=send)
    assert len(send.calls) == 4
    notification.refresh_from_db()
    assert notification.delivered_at is not None and notification.attempts == 4

    # Delivered: never sent again.
    with clock.travel(elapsed + dt.timedelta(days=2)):
        assert deliver_due_notifications(send=send) == 0
    assert len(send.calls) == 4


def test_each_attempt_is_signed_afresh_with_the_same_body(notification):
    send = Recorder(500, 200)
    deliver_due_notifications(send=send)
    with clock.travel(RETRY_SCHEDULE[0]):
        deliver_due_notifications(send=send)
    (_, first, body1), (_, second, body2) = send.calls
    assert body1 == body2
    assert first["Wechatpay-Nonce"] != second["Wechatpay-Nonce"]
    assert first["Wechatpay-Timestamp"] != second["Wechatpay-Timestamp"]


def test_a_send_that_raises_counts_as_a_failed_attempt(notification):
    send = Recorder(ConnectionRefusedError(), TimeoutError())
    deliver_due_notifications(send=send)
    notification.refresh_from_db()
    assert notification.attempts == 1 and notification.last_status is None
    assert notification.delivered_at is None


def test_the_sandbox_gives_up_after_the_last_retry(notification):
    send = Recorder(*([500] * 100))
    elapsed = dt.timedelta(0)
    deliver_due_notifications(send=send)
    for interval in RETRY_SCHEDULE:
        elapsed += interval
        with clock.travel(elapsed):
            deliver_due_notifications(send=send)
    assert len(send.calls) == 1 + len(RETRY_SCHEDULE)
    notification.refresh_from_db()
    assert notification.given_up_at is not None and notification.delivered_at is None
    with clock.travel(elapsed + dt.timedelta(days=1)):
        deliver_due_notifications(send=send)
    assert len(send.calls) == 1 + len(RETRY_SCHEDULE)


def test_a_claimed_notification_is_not_sent_by_a_second_worker(notification):
    second = Recorder()

    def first(url: str, headers: dict[str, str], body: bytes) -> int:
        # While this worker is sending, another one looks for due work.
        assert deliver_due_notifications(send=second) == 0
        return 200

    assert deliver_due_notifications(send=first) == 1
    assert second.calls == []


def test_delivered_through_our_callback_the_payment_is_paid(notification, booking_calls):
    assert deliver_due_notifications(send=client_send) == 1
    payment = Payment.objects.get(out_trade_no=notification.trade.out_trade_no)
    assert payment.state == Payment.State.PAID
    assert booking_calls == [("complete_paid_hold", payment.id)]


def test_http_send_counts_a_refused_connection_as_an_exception():
    with pytest.raises(OSError):
        sandbox.http_send("http://127.0.0.1:9/notify", {"Content-Type": "application/json"}, b"{}")
