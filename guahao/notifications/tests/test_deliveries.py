"""Each event's message reaches the in-app list and each outside channel once: retried with
back-off through a channel's failures, parked for staff when it keeps failing, never sent twice."""

from __future__ import annotations

import datetime as dt

import pytest

from guahao import clock
from guahao.notifications import messaging
from guahao.notifications import services as outbox
from guahao.notifications.models import Delivery, InboxMessage, OutboxEvent
from guahao.notifications.tests.conftest import registered
from guahao.testing import run_worker
from guahao.worker import drain_outbox

pytestmark = pytest.mark.django_db


def _backoffs(times: int) -> None:
    """Let the worker try `times` more times, a day apart (past any back-off)."""
    for attempt in range(times):
        with clock.travel(dt.timedelta(days=attempt + 1)):
            run_worker()


def test_a_channel_that_fails_three_times_then_works_delivers_once(world, booker, flaky):
    reg = registered(*booker, world.session)
    delivery = Delivery.objects.get(event__topic="registration.booked")
    assert delivery.state == Delivery.State.PENDING and delivery.attempts == 1
    assert "重试" not in delivery.last_error and "第1次失败" in delivery.last_error
    run_worker()  # the back-off has not passed: nothing is tried
    assert flaky.attempts[delivery.id] == 1
    with clock.travel(dt.timedelta(seconds=31)):  # the first back-off
        run_worker()
        with clock.travel(dt.timedelta(seconds=61)):  # the second
            run_worker()
    assert flaky.attempts[delivery.id] == 3 and not flaky.sent
    _backoffs(1)
    delivery.refresh_from_db()
    assert delivery.state == Delivery.State.SENT and delivery.attempts == 4
    assert [m.delivery_id for m in flaky.sent] == [delivery.id]
    assert "挂号单号" in flaky.sent[0].text and reg.registration_no in flaky.sent[0].text
    _backoffs(3)  # nothing more is ever sent
    assert len(flaky.sent) == 1
    # The in-app list got the message at once, whatever the outside channel did.
    (inbox,) = InboxMessage.objects.filter(account=booker[0], topic="registration.booked")
    assert inbox.title == "预约成功" and "张*丰" in inbox.text and "张三丰" not in inbox.text


def test_a_channel_that_keeps_failing_parks_the_delivery_and_staff_can_retry_it(world, booker, flaky):
    flaky.failures = None
    registered(*booker, world.session)
    _backoffs(messaging.MAX_DELIVERY_ATTEMPTS + 2)
    delivery = Delivery.objects.get(event__topic="registration.booked")
    assert delivery.state == Delivery.State.PARKED and delivery.attempts == messaging.MAX_DELIVERY_ATTEMPTS
    _backoffs(3)  # parked: no worker takes it
    assert flaky.attempts[delivery.id] == messaging.MAX_DELIVERY_ATTEMPTS
    flaky.failures = 0  # the channel works again
    assert messaging.retry_delivery(delivery_id=delivery.id)
    run_worker()
    delivery.refresh_from_db()
    assert delivery.state == Delivery.State.SENT and len(flaky.sent) == 1
    assert not messaging.retry_delivery(delivery_id=delivery.id)  # only a parked one


def test_an_event_handled_twice_writes_its_messages_once(world, booker, flaky):
    flaky.failures = 0
    registered(*booker, world.session)
    event = OutboxEvent.objects.get(topic="registration.booked")
    assert messaging.publish(event) == 0
    assert InboxMessage.objects.filter(event=event).count() == 1
    assert Delivery.objects.filter(event=event).count() == 1 and len(flaky.sent) == 1


def test_an_event_whose_handler_keeps_failing_is_parked_until_staff_retry_it(monkeypatch):
    from guahao import worker

    calls = []

    def broken(_topic, payload):
        calls.append(payload)
        raise RuntimeError("处理失败")

    monkeypatch.setitem(worker.HANDLERS, "refund.requested", broken)
    event = outbox.emit("refund.requested", refund_id=0)
    for attempt in range(outbox.MAX_EVENT_ATTEMPTS + 2):
        with clock.travel(dt.timedelta(days=attempt + 1)):
            drain_outbox()
    event.refresh_from_db()
    assert event.parked_at is not None and event.processed_at is None
    assert len(calls) == outbox.MAX_EVENT_ATTEMPTS and "处理失败" in event.last_error
    with clock.travel(dt.timedelta(days=30)):
        assert drain_outbox() == 0
    monkeypatch.setitem(worker.HANDLERS, "refund.requested", lambda _t, _p: None)
    assert outbox.retry_event(event_id=event.id)
    assert drain_outbox() == 1
    event.refresh_from_db()
    assert event.processed_at is not None and event.parked_at is None
