"""The HTTP adapter and the booking rules against the HIS simulator running as a real process on
loopback (`guahao his-simulator`), with faults switched on through its control endpoint.

First each operation × each fault, at the port: a refusal is HisRefused, anything unanswered is
HisTimeout. Then the rules of docs/his.md end to end through the real services, for a hospital
whose HIS connection points at the simulator: no oversold number, no retry on the patient's path,
and every paid order ends registered or refunded, never both, never neither."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest

from guahao import clock
from guahao.booking import selectors, services
from guahao.booking.models import Hold, Registration
from guahao.booking.states import HoldState
from guahao.booking.tests.conftest import World, paid, ready_to_book
from guahao.his import services as his_services
from guahao.his.adapters.http import HttpHis
from guahao.his.base import CardRequest, HisRefused, HisTimeout, LockRequest, RegisterRequest
from guahao.his.models import HisConnection
from guahao.his.simulator.process import Simulator, running_simulator
from guahao.ledger import find_violations
from guahao.payments.models import Refund
from guahao.scheduling.models import Slot
from guahao.testing import (
    api_client,
    make_account,
    make_department,
    make_doctor,
    make_hospital,
    make_session,
    run_worker,
)

SECRET = "simulator-secret-for-guahao-tests"
CODE = "HSIM"
TIMEOUT = 1.0  # our read timeout; a "timeout" fault holds the connection longer than this
HELD_LONGER_MS = 2500


@pytest.fixture(scope="module")
def simulator() -> Iterator[Simulator]:
    with running_simulator(hospital=CODE, secret=SECRET, seed="demo") as sim:
        yield sim


@pytest.fixture
def sim(simulator: Simulator) -> Simulator:
    simulator.reset()
    return simulator


def fault(sim: Simulator, operation: str, kind: str, **kw: Any) -> None:
    if kind == "timeout":
        kw.setdefault("latency_ms", HELD_LONGER_MS)
    if kind == "latency":
        kw.setdefault("latency_ms", 200)
    sim.fault(operation, kind, **kw)


def his_session(sim: Simulator, *, numbers: int = 4, fee_fen: int = 2500) -> dict[str, Any]:
    tomorrow = clock.today() + dt.timedelta(days=1)
    return sim.add_session(department_code="NK01", date=tomorrow.isoformat(), period="morning", numbers=numbers, fee_fen=fee_fen)


def lock_of(hold_id: int, session: dict[str, Any], seq: int = 1) -> LockRequest:
    slot = session["slots"][seq - 1]
    return LockRequest(
        hold_id=hold_id,
        session_code=session["code"],
        slot_code=slot["code"],
        slot_seq=slot["seq"],
        expires_at=clock.now() + dt.timedelta(minutes=10),
    )


def register_of(hold_id: int, session: dict[str, Any], *, lock_id: str, seq: int = 1) -> RegisterRequest:
    slot = session["slots"][seq - 1]
    return RegisterRequest(
        hold_id=hold_id,
        his_lock_id=lock_id,
        session_code=session["code"],
        slot_code=slot["code"],
        slot_seq=slot["seq"],
        patient_name="张三丰",
        id_type="resident",  # guahao's own type, mapped to the contract's resident_id
        id_number="110101199003070019",
        fee_fen=session["fee_fen"],
        insurance=False,
        out_trade_no=f"GHT{hold_id}",
    )


def http_his(sim: Simulator, **kw: Any) -> HttpHis:
    return HttpHis(base_url=sim.url, hospital_code=CODE, secret=SECRET, connect_timeout=TIMEOUT, read_timeout=TIMEOUT, **kw)


def live_locks(sim: Simulator, hold_id: int | None = None) -> list[dict[str, Any]]:
    return [lock for lock in sim.state()["locks"] if lock["status"] == "live" and hold_id in (None, lock["hold_id"])]


def active_registrations(sim: Simulator) -> dict[int, str]:
    return {r["hold_id"]: r["registration_no"] for r in sim.state()["registrations"] if r["status"] != "cancelled"}


# --- every operation × every fault, at the port --------------------------------------------------------


def call(his: HttpHis, sim: Simulator, operation: str, session: dict[str, Any]) -> Any:
    """Set the scene for `operation` without faults, then return a call of it (faults set after)."""
    hold_id = 41
    if operation in ("release", "register", "query", "cancel"):
        lock_id = his.lock_slot(lock_of(hold_id, session))
    if operation in ("query", "cancel"):
        his.register(register_of(hold_id, session, lock_id=lock_id))
    return {
        "lock": lambda: his.lock_slot(lock_of(hold_id, session)),
        "release": lambda: his.release_slot(hold_id=hold_id, his_lock_id=lock_id, slot_code=""),
        "register": lambda: his.register(register_of(hold_id, session, lock_id=lock_id)),
        "query": lambda: his.query_registration(hold_id=hold_id),
        "cancel": lambda: his.cancel_registration(hold_id=hold_id),
        "schedule": lambda: his.fetch_schedule(days=2),
        "card": lambda: his.find_or_create_card(CardRequest(name="张三丰", id_type="resident", id_number="110101199003070019")),
        "day": lambda: his.registrations_of_day(clock.today() + dt.timedelta(days=1)),
    }[operation]


# What the simulator's "conflict" (each operation's natural refusal) becomes at the port.
CONFLICT = {
    "lock": HisRefused,
    "release": None,  # "nothing to release" is not an error
    "register": HisRefused,
    "query": None,  # no registration: None
    "cancel": HisRefused,
    "schedule": HisRefused,
    "card": HisRefused,
    "day": HisRefused,
}
OPERATIONS = tuple(CONFLICT)


@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize("kind", ["conflict", "timeout", "error", "lost_reply", "down", "latency"])
def test_each_fault_of_each_operation_maps_onto_the_port(sim, operation, kind):
    his = http_his(sim)
    session = his_session(sim)
    act = call(his, sim, operation, session)
    fault(sim, operation, kind)
    calls_before = sim.state()["calls"].get(operation, 0)
    expected = {"timeout": HisTimeout, "error": HisTimeout, "lost_reply": HisTimeout, "down": HisTimeout,
                "latency": None, "conflict": CONFLICT[operation]}[kind]
    if expected is None:
        act()
    else:
        with pytest.raises(expected):
            act()
    assert sim.state()["calls"].get(operation, 0) == calls_before + 1  # one call, never repeated


def test_a_wrong_secret_is_a_refused_signature_and_an_unsigned_answer_no_answer(sim):
    session = his_session(sim)
    with pytest.raises(HisRefused) as caught:
        HttpHis(base_url=sim.url, hospital_code=CODE, secret="not-the-hospitals-secret").lock_slot(lock_of(5, session))
    assert caught.value.reason == "BAD_SIGNATURE"
    sim.break_contract("unsigned")
    with pytest.raises(HisTimeout):
        http_his(sim).lock_slot(lock_of(6, session))


def test_without_a_lock_api_the_number_is_registered_at_payment(sim):
    session = his_session(sim)
    his = http_his(sim, has_lock_api=False)
    assert his.lock_slot(lock_of(7, session)) == ""
    his.release_slot(hold_id=7, his_lock_id="", slot_code="")
    assert sim.state()["calls"].get("lock", 0) == 0 and sim.state()["calls"].get("release", 0) == 0
    number = his.register(register_of(7, session, lock_id="")).registration_no
    assert active_registrations(sim) == {7: number}


# --- the booking rules, end to end ----------------------------------------------------------------------


@pytest.fixture
def world(db, sim) -> World:
    """A hospital whose HIS connection points at the simulator, with one session mirrored from it."""
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
    department = make_department(hospital, name="心血管内科")
    doctor = make_doctor(department, name="李建国")
    remote = his_session(sim, numbers=4, fee_fen=2500)
    session = make_session(department, doctor=doctor, slots=4, fee_fen=2500)
    session.his_code = remote["code"]
    session.save(update_fields=["his_code"])
    for slot, his_slot in zip(session.slots.order_by("seq"), remote["slots"], strict=True):
        Slot.objects.filter(id=slot.id).update(his_code=his_slot["code"])
    world = World(hospital, department, doctor, session)
    world.remote = remote  # type: ignore[attr-defined]
    return world


@pytest.fixture
def booker(world):
    account = make_account()
    return account, ready_to_book(account, world.hospital)


def lock_calls(sim: Simulator) -> int:
    return sim.state()["calls"].get("lock", 0)


def test_the_hospitals_connection_is_what_booking_calls(world):
    his = his_services.adapter_for(world.hospital.id)
    assert isinstance(his, HttpHis) and his.has_lock_api and his.hospital_code == CODE
    assert his_services.adapter_for(world.hospital.id) is his  # one client per process while unchanged


def test_a_lock_the_his_refuses_is_no_hold_and_the_number_is_gone_from_the_list(world, booker, sim):
    slot = world.session.slots.get(seq=1)
    # Someone at the hospital's window has the number.
    http_his(sim).lock_slot(lock_of(900001, world.remote))
    me = api_client(booker[0])
    answer = me.post("/api/v1/holds", {"slot_id": slot.id})
    assert answer.status_code == 409
    assert answer.json()["code"] == "his_refused" and "号源已不可用" in answer.json()["message"]
    assert not Hold.objects.filter(account=booker[0], state__in=[HoldState.HELD, HoldState.PAYING]).exists()
    windows = me.get(f"/api/v1/sessions/{world.session.id}/slots").json()["windows"]
    assert slot.id not in [w["slot_id"] for w in windows]
    assert sum(w["free"] for w in windows) == 3
    assert lock_calls(sim) == 2  # the window's and ours: no retry
    run_worker()
    assert [lock["hold_id"] for lock in live_locks(sim)] == [900001]  # the other lock is untouched
    assert find_violations() == []


@pytest.mark.parametrize("kind", ["lost_reply", "timeout", "error", "down"])
def test_a_lock_without_an_answer_is_released_by_the_worker_and_never_retried(world, booker, sim, kind):
    fault(sim, "lock", kind)
    answer = api_client(booker[0]).post("/api/v1/holds", {"slot_id": world.session.slots.get(seq=1).id})
    assert answer.status_code == 503
    assert answer.json()["code"] == "his_timeout" and "0571-87654321" in answer.json()["message"]
    hold = Hold.objects.get(account=booker[0])
    assert hold.state == HoldState.FAILED
    assert lock_calls(sim) == 1  # exactly one lock call on the patient's path
    if kind == "lost_reply":
        assert [lock["hold_id"] for lock in live_locks(sim)] == [hold.id]  # it did lock, unseen
    run_worker()
    assert live_locks(sim) == []  # released by our hold id
    assert sim.state()["calls"].get("release", 0) >= 1
    assert lock_calls(sim) == 1  # and never locked twice for one hold
    # The number is free again here and at the HIS: the patient's refresh can book it.
    services.hold_slot(account=booker[0], slot_id=world.session.slots.get(seq=1).id)
    assert len(live_locks(sim)) == 1
    assert find_violations() == []


def test_a_release_the_his_does_not_answer_is_sent_again_until_done(world, booker, sim):
    fault(sim, "lock", "lost_reply")
    fault(sim, "release", "error")
    with pytest.raises(Exception):  # noqa: B017 (the patient's 503)
        services.hold_slot(account=booker[0], slot_id=world.session.slots.get(seq=1).id)
    hold = Hold.objects.get(account=booker[0])
    run_worker()
    assert [lock["hold_id"] for lock in live_locks(sim)] == [hold.id]  # the release failed: the job waits
    with clock.travel(dt.timedelta(minutes=2)):
        run_worker()
    assert live_locks(sim) == []


def test_a_register_the_his_refuses_after_payment_fails_the_hold_and_refunds(world, booker, sim):
    fault(sim, "register", "conflict")  # LOCK_NOT_FOUND: the lock lapsed at the HIS
    hold, payment = paid(world, *booker)
    run_worker()
    hold.refresh_from_db()
    assert hold.state == HoldState.FAILED
    assert not Registration.objects.filter(hold=hold).exists()
    [refund] = Refund.objects.filter(payment=payment)
    assert refund.state == Refund.State.SUCCEEDED and refund.amount_fen == payment.amount_fen
    assert active_registrations(sim) == {}
    assert live_locks(sim) == []  # its lock released too
    assert find_violations() == []


@pytest.mark.parametrize("kind", ["lost_reply", "timeout", "error", "down"])
def test_a_register_without_an_answer_is_resolved_by_asking_the_his(world, booker, sim, kind):
    fault(sim, "register", kind)
    hold, payment = paid(world, *booker)
    run_worker()
    hold.refresh_from_db()
    assert hold.state == HoldState.SUCCEEDED
    registration = Registration.objects.get(hold=hold)
    assert active_registrations(sim) == {hold.id: registration.registration_no}
    assert not Refund.objects.filter(payment=payment).exists()  # registered, not refunded
    assert sim.state()["calls"].get("query", 0) >= 1
    assert find_violations() == []


def test_a_register_unanswered_until_the_cutoff_is_refunded_and_cancelled_at_the_his(world, booker, sim):
    fault(sim, "register", "lost_reply")  # it registers, we never hear of it
    fault(sim, "query", "error", times=-1)  # and cannot find out
    hold, payment = paid(world, *booker)
    run_worker()
    hold.refresh_from_db()
    assert hold.state == HoldState.REGISTERING
    assert list(active_registrations(sim)) == [hold.id]
    cutoff = selectors.registering_cutoff(hold)
    with clock.travel(cutoff - clock.now() + dt.timedelta(seconds=1)):
        run_worker()
    hold.refresh_from_db()
    assert hold.state == HoldState.FAILED
    assert not Registration.objects.filter(hold=hold).exists()
    [refund] = Refund.objects.filter(payment=payment)
    assert refund.state == Refund.State.SUCCEEDED
    assert active_registrations(sim) == {}  # cancelled at the HIS: never both
    assert find_violations() == []


def test_a_hospital_without_a_lock_api_holds_locally_and_registers_at_payment(world, booker, sim):
    connection = HisConnection.objects.get(hospital=world.hospital)
    connection.mode = HisConnection.Mode.HIS_NO_LOCK
    connection.save()
    hold, payment = paid(world, *booker)
    assert lock_calls(sim) == 0
    run_worker()
    hold.refresh_from_db()
    assert hold.state == HoldState.SUCCEEDED
    assert active_registrations(sim) == {hold.id: Registration.objects.get(hold=hold).registration_no}
    assert find_violations() == []
