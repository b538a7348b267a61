import datetime as dt

import pytest

from guahao import clock
from guahao.notifications import services
from guahao.notifications.models import OutboxEvent
from guahao.testing import run_concurrently


@pytest.mark.django_db
def test_a_claimed_event_is_not_claimed_again_until_its_lease_runs_out():
    services.emit("hold.created", hold_id=1)
    assert len(services.claim_events(worker_id="a")) == 1
    assert services.claim_events(worker_id="b") == []
    with clock.travel(dt.timedelta(seconds=61)):
        assert len(services.claim_events(worker_id="b")) == 1


@pytest.mark.django_db
def test_a_failed_event_backs_off_and_keeps_its_error():
    services.emit("payment.paid", payment_id=1)
    event = services.claim_next()
    assert services.mark_failed(event, "HisTimeout: no answer")
    event.refresh_from_db()
    assert event.attempts == 1 and event.last_error.startswith("HisTimeout")
    assert services.claim_events(worker_id="a") == []
    with clock.travel(dt.timedelta(seconds=31)):
        assert [e.id for e in services.claim_events(worker_id="a")] == [event.id]


@pytest.mark.django_db
def test_only_the_holder_of_a_live_claim_completes_an_event():
    services.emit("payment.paid", payment_id=1)
    first = services.claim_next()
    with clock.travel(dt.timedelta(seconds=61)):
        # The first worker's claim lapsed (its handling was slow): a second worker takes over.
        second = services.claim_next()
        assert second.id == first.id and second.claim_token != first.claim_token
        assert not services.mark_done(first)
        assert not services.mark_failed(first, "late")
        assert services.mark_done(second)
    event = OutboxEvent.objects.get(id=first.id)
    assert event.processed_at is not None and event.attempts == 0


@pytest.mark.django_db
def test_a_claim_never_completes_an_event_that_another_claim_holds():
    services.emit("payment.paid", payment_id=1)
    event = services.claim_next()
    stale = OutboxEvent.objects.get(id=event.id)
    stale.claim_token = "someone-else"
    assert not services.mark_done(stale)
    assert services.mark_done(event)


@pytest.mark.django_db(transaction=True)
def test_two_workers_never_take_the_same_event():
    for i in range(40):
        services.emit("hold.created", hold_id=i)
    results = run_concurrently([lambda w=w: services.claim_events(worker_id=w, limit=40) for w in "abcd"])
    claimed = [e.id for ok, events in results if ok for e in events]
    assert len(claimed) == len(set(claimed)) == OutboxEvent.objects.count()


@pytest.mark.django_db
def test_one_scheduler_at_a_time_and_a_successor_after_the_lease_runs_out():
    ttl = dt.timedelta(seconds=30)
    assert services.hold_lease(name="scheduler", holder="a", ttl=ttl)
    assert not services.hold_lease(name="scheduler", holder="b", ttl=ttl)
    assert services.hold_lease(name="scheduler", holder="a", ttl=ttl)  # renewal
    with clock.travel(dt.timedelta(seconds=31)):
        assert services.hold_lease(name="scheduler", holder="b", ttl=ttl)
        assert not services.hold_lease(name="scheduler", holder="a", ttl=ttl)


@pytest.mark.django_db(transaction=True)
def test_concurrent_workers_elect_one_scheduler():
    results = run_concurrently(
        [lambda w=w: services.hold_lease(name="scheduler", holder=w, ttl=dt.timedelta(seconds=30)) for w in "abcdefgh"]
    )
    assert sum(1 for ok, won in results if ok and won) == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_worker_whose_claim_lapsed_mid_event_cannot_complete_it(monkeypatch):
    """Worker A is slow inside an event past its lease; worker B takes the event over and completes
    it; A's completion is refused. Forced with real threads, 20 times."""
    import threading

    from django.db import connections

    from guahao import worker

    for _ in range(20):
        event = services.emit("test.slow", n=1)
        inside, resume = threading.Event(), threading.Event()
        handled: list[str] = []

        def slow(topic, payload, handled=handled, inside=inside, resume=resume):
            handled.append(threading.current_thread().name)
            if len(handled) == 1:
                inside.set()
                resume.wait(10)

        monkeypatch.setitem(worker.HANDLERS, "test.slow", slow)
        outcome: dict[str, int] = {}

        def worker_a(outcome=outcome):
            try:
                outcome["a"] = worker.drain_outbox(worker_id="a", limit=1)
            finally:
                connections.close_all()

        a = threading.Thread(target=worker_a, name="a")
        a.start()
        assert inside.wait(10)
        with clock.travel(services.EVENT_LEASE + dt.timedelta(seconds=1)):
            assert worker.drain_outbox(worker_id="b", limit=1) == 1  # B takes the lapsed claim over
            resume.set()
            a.join(10)
        row = OutboxEvent.objects.get(id=event.id)
        assert row.processed_at is not None and row.attempts == 0
        assert len(handled) == 2  # handled twice (handlers are idempotent), completed once by B
