"""A soak against the HIS simulator process: 500 bookings (GUAHAO_HIS_SOAK_BOOKINGS to change it)
with about 10% of HIS calls faulted — errors, replies lost after the change was made, and no
answer in time — spread over every operation. However each call ends, the books must close:
every paid payment is registered or refunded in full (never both, never neither), every HIS lock
is released or became a registration, the HIS holds exactly our registrations, no hold is stuck,
no number is sold twice, and ledger-check is clean."""

from __future__ import annotations

import datetime as dt
import os
from collections import Counter
from collections.abc import Iterator

import pytest

from guahao import clock
from guahao.booking import services
from guahao.booking.models import Hold, Registration
from guahao.booking.states import LIVE_HOLD_STATES, RegistrationStatus
from guahao.booking.tests.conftest import ready_to_book
from guahao.errors import GuahaoError
from guahao.his.models import HisConnection
from guahao.his.simulator.process import Simulator, running_simulator
from guahao.ledger import find_violations
from guahao.payments import services as payments
from guahao.payments.models import Payment, Refund
from guahao.scheduling.models import ReleaseRule, Slot
from guahao.testing import (
    make_account,
    make_department,
    make_hospital,
    make_session,
    pay_at_provider,
    run_worker,
)

BOOKINGS = int(os.environ.get("GUAHAO_HIS_SOAK_BOOKINGS", "500"))
SESSIONS = 10
SECRET = "soak-secret-for-the-his-simulator"
CODE = "HSOAK"
TIMEOUT = 0.5  # our read timeout; a "timeout" fault holds the answer longer
# About 10% of calls in all, over every operation.
FAULTS = (("error", 0.04), ("lost_reply", 0.03), ("timeout", 0.03))

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def simulator() -> Iterator[Simulator]:
    with running_simulator(hospital=CODE, secret=SECRET, seed="empty") as sim:
        yield sim


def _mirror(sim: Simulator, hospital) -> list[Slot]:
    """SESSIONS sessions at the HIS, mirrored here number for number (as sync would)."""
    department = make_department(hospital, name="皮肤科")
    per_session = -(-BOOKINGS // SESSIONS)
    slots: list[Slot] = []
    for i in range(SESSIONS):
        day = clock.today() + dt.timedelta(days=1 + i // 2)
        period, start = ("morning", dt.time(8, 0)) if i % 2 == 0 else ("afternoon", dt.time(13, 0))
        remote = sim.add_session(
            department_code="PFK",
            date=day.isoformat(),
            period=period,
            numbers=per_session,
            fee_fen=2500,
            window_minutes=30,
        )
        session = make_session(
            department,
            day=day,
            slots=per_session,
            per_window=per_session,
            fee_fen=2500,
            start=start,
            window_minutes=30,
        )
        session.his_code = remote["code"]
        session.save(update_fields=["his_code"])
        for slot, his_slot in zip(session.slots.order_by("seq"), remote["slots"], strict=True):
            Slot.objects.filter(id=slot.id).update(his_code=his_slot["code"])
        slots += list(session.slots.order_by("seq"))
    return slots


def test_500_bookings_with_a_tenth_of_his_calls_faulted_close_the_books(simulator):
    hospital = make_hospital(service_phone="0571-87654321")
    ReleaseRule.objects.filter(hospital=hospital).update(
        max_live_holds_per_account=100, max_holds_per_day_per_account=1000
    )
    HisConnection.objects.create(
        hospital=hospital,
        mode=HisConnection.Mode.HIS_LOCK,
        base_url=simulator.url,
        hospital_code=CODE,
        secret=SECRET,
        connect_timeout_seconds=TIMEOUT,
        read_timeout_seconds=TIMEOUT,
    )
    slots = _mirror(simulator, hospital)
    for kind, rate in FAULTS:
        simulator.fault(
            "*",
            kind,
            times=-1,
            rate=rate,
            latency_ms=int(TIMEOUT * 1000) + 700 if kind == "timeout" else None,
        )

    outcomes: Counter[str] = Counter()
    for n, slot in enumerate(slots[:BOOKINGS]):
        account = make_account()
        patient = ready_to_book(account, hospital, name="张三丰")
        try:
            hold = services.hold_slot(account=account, slot_id=slot.id)
            services.confirm_hold(
                account=account,
                hold_id=hold.id,
                patient_id=patient.id,
                channel="wechat",
                insurance=False,
            )
            payment, _ = services.pay_hold(account=account, hold_id=hold.id)
        except GuahaoError as exc:  # the patient is told and may try again; no retry here
            outcomes[f"refused:{exc.code}"] += 1
            continue
        pay_at_provider(payment.out_trade_no)
        outcomes["paid"] += 1
        if n % 25 == 24:
            run_worker()

    # The faults end; time passes (every lock lapses, every backoff comes due); the worker drains.
    simulator.clear()
    for minutes in (15, 45, 120):
        simulator.advance(minutes * 60)
        with clock.travel(dt.timedelta(minutes=minutes)):
            run_worker()
            payments.poll_open_payments()
            payments.poll_processing_refunds()
            run_worker()

    paid = list(Payment.objects.filter(state=Payment.State.PAID))
    assert outcomes["paid"] > BOOKINGS * 0.6, outcomes
    assert len(paid) >= outcomes["paid"]
    registered = {r.hold.payment_id: r for r in Registration.objects.select_related("hold")}
    for payment in paid:
        is_registered = (
            payment.id in registered and registered[payment.id].status == RegistrationStatus.BOOKED
        )
        is_refunded = payment.refunded_fen == payment.amount_fen
        assert is_registered != is_refunded, (
            payment.out_trade_no,
            is_registered,
            payment.refunded_fen,
        )
    assert not Refund.objects.exclude(state=Refund.State.SUCCEEDED).exists()
    assert sum(p.amount_fen for p in paid) == 2500 * len(registered) + sum(
        p.refunded_fen for p in paid
    )

    assert not Hold.objects.filter(state__in=LIVE_HOLD_STATES).exists()  # no hold stuck
    state = simulator.state()
    assert [
        lock for lock in state["locks"] if lock["status"] == "live"
    ] == []  # released or registered
    his_active = {r["hold_id"] for r in state["registrations"] if r["status"] != "cancelled"}
    assert his_active == {
        r.hold_id for r in registered.values() if r.status == RegistrationStatus.BOOKED
    }
    booked_slots = [r.slot_id for r in registered.values() if r.status == RegistrationStatus.BOOKED]
    assert len(booked_slots) == len(set(booked_slots))  # no number sold twice
    assert find_violations() == []
    print(
        f"\nHIS soak: {BOOKINGS} bookings, {dict(outcomes)}, registered {len(his_active)}, "
        f"refunded {sum(1 for p in paid if p.refunded_fen)}; calls {state['calls']}"
    )
