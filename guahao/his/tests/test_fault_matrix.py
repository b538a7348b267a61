"""The fault matrix: every fault of the simulator × every operation booking calls, each its own
test. One day of a small clinic runs through the real services against the simulator process —
a patient books and pays, one lets a hold go, one cancels a paid registration — with the fault
switched on for its operation; then the fault ends, time passes and the worker drains. Whatever
the fault did, the books close: no number sold twice, every paid payment registered xor refunded,
no HIS lock left, the HIS holding exactly our registrations, ledger-check clean."""

from __future__ import annotations

import contextlib
import datetime as dt
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
from guahao.payments.models import Payment
from guahao.scheduling.models import Slot
from guahao.testing import (
    make_account,
    make_department,
    make_hospital,
    make_session,
    pay_at_provider,
    run_worker,
)

SECRET = "fault-matrix-secret-for-the-simulator"
CODE = "HFM"
TIMEOUT = 0.5
OPERATIONS = ("lock", "release", "register", "query", "cancel")
FAULTS = ("latency", "timeout", "error", "lost_reply", "conflict", "down")

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def simulator() -> Iterator[Simulator]:
    with running_simulator(hospital=CODE, secret=SECRET, seed="empty") as sim:
        yield sim


def _clinic(sim: Simulator):
    hospital = make_hospital(service_phone="0571-87654321")
    HisConnection.objects.create(
        hospital=hospital,
        mode=HisConnection.Mode.HIS_LOCK,
        base_url=sim.url,
        hospital_code=CODE,
        secret=SECRET,
        connect_timeout_seconds=TIMEOUT,
        read_timeout_seconds=TIMEOUT,
    )
    department = make_department(hospital, name="皮肤科")
    tomorrow = clock.today() + dt.timedelta(days=1)
    remote = sim.add_session(
        department_code="PFK", date=tomorrow.isoformat(), period="morning", numbers=4, fee_fen=2500
    )
    session = make_session(department, day=tomorrow, slots=4, fee_fen=2500)
    session.his_code = remote["code"]
    session.save(update_fields=["his_code"])
    for slot, his_slot in zip(session.slots.order_by("seq"), remote["slots"], strict=True):
        Slot.objects.filter(id=slot.id).update(his_code=his_slot["code"])
    return hospital, session


def _book(hospital, session, seq: int):
    """A patient holds number `seq`, confirms and pays; None when the hold itself was refused."""
    account = make_account()
    patient = ready_to_book(account, hospital)
    try:
        hold = services.hold_slot(account=account, slot_id=session.slots.get(seq=seq).id)
    except GuahaoError:
        return None, account
    services.confirm_hold(
        account=account, hold_id=hold.id, patient_id=patient.id, channel="wechat", insurance=False
    )
    payment, _ = services.pay_hold(account=account, hold_id=hold.id)
    pay_at_provider(payment.out_trade_no)
    return hold, account


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("operation", OPERATIONS)
def test_every_fault_of_every_operation_closes_the_books(simulator, operation, fault):
    simulator.reset()
    hospital, session = _clinic(simulator)
    extra = (
        {"latency_ms": 200}
        if fault == "latency"
        else {"latency_ms": int(TIMEOUT * 1000) + 700}
        if fault == "timeout"
        else {}
    )
    simulator.fault(operation, fault, times=-1 if operation in ("query", "release") else 1, **extra)

    kept, _ = _book(hospital, session, seq=1)  # booked and kept
    cancelled, canceller = _book(hospital, session, seq=2)  # booked, then cancelled by the patient
    let_go = make_account()  # holds and lets the hold go
    ready_to_book(let_go, hospital)
    try:
        hold = services.hold_slot(account=let_go, slot_id=session.slots.get(seq=3).id)
        services.release_hold(account=let_go, hold_id=hold.id)
    except GuahaoError:
        pass
    run_worker()
    if cancelled is not None:
        registration = Registration.objects.filter(hold=cancelled).first()
        if registration is not None:
            # The HIS may refuse: the patient is told to call the hospital, and it stays booked.
            with contextlib.suppress(GuahaoError):
                services.cancel_registration(account=canceller, registration_id=registration.id)
    run_worker()

    # The fault ends; time passes (locks lapse, backoffs come due); the worker drains.
    simulator.clear()
    for minutes in (15, 90):
        simulator.advance(minutes * 60)
        with clock.travel(dt.timedelta(minutes=minutes)):
            run_worker()

    registrations = {r.hold.payment_id: r for r in Registration.objects.select_related("hold")}
    for payment in Payment.objects.filter(state=Payment.State.PAID):
        booked = (
            payment.id in registrations
            and registrations[payment.id].status == RegistrationStatus.BOOKED
        )
        refunded = payment.refunded_fen == payment.amount_fen
        assert booked != refunded, (
            operation,
            fault,
            payment.out_trade_no,
            booked,
            payment.refunded_fen,
        )
    assert not Hold.objects.filter(state__in=LIVE_HOLD_STATES).exists()
    state = simulator.state()
    assert [lock for lock in state["locks"] if lock["status"] == "live"] == []
    ours = {r.hold_id for r in registrations.values() if r.status == RegistrationStatus.BOOKED}
    assert {r["hold_id"] for r in state["registrations"] if r["status"] != "cancelled"} == ours
    slots = [r.slot_id for r in registrations.values() if r.status == RegistrationStatus.BOOKED]
    assert len(slots) == len(set(slots))
    assert find_violations() == []
    if kept is not None and operation not in ("register", "query"):
        assert Registration.objects.filter(hold=kept, status=RegistrationStatus.BOOKED).exists()
