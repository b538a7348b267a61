"""The HIS simulator as a real process on loopback, seen from a plain signed client of the contract:
signatures, idempotency by hold id, locks lapsing on the HIS side, schedule cursors, attendance and
every fault kind. Each test starts its own process and stops it on the way out."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from guahao.his import wire
from guahao.his.conformance import NoAnswer, SignedClient
from guahao.his.simulator.process import ControlError, Simulator, running_simulator

LOCAL_TZ = dt.timezone(dt.timedelta(hours=8))
PATIENT = {"name": "李四", "id_type": "resident_id", "id_number": "11010519491231002X", "phone": "13800138000"}


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with running_simulator(hospital="H1", secret="test-secret") as running:
        yield running


def free_numbers(client: SignedClient, count: int = 2) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Free numbers of open sessions tomorrow or later (today's windows may have passed)."""
    schedule = client.call("GET", wire.SCHEDULE, query={"days": 7}).document
    tomorrow = (dt.datetime.now(LOCAL_TZ) + dt.timedelta(days=1)).date().isoformat()
    found = [(s, slot) for s in schedule["sessions"] if s["date"] >= tomorrow for slot in s["slots"] if slot["state"] == "free"]
    return found[:count]


def lock_body(hold_id: int, session: dict[str, Any], slot: dict[str, Any], *, seconds: int = 300) -> dict[str, Any]:
    expires = dt.datetime.now(LOCAL_TZ).replace(microsecond=0) + dt.timedelta(seconds=seconds)
    return {"hold_id": hold_id, "session_code": session["code"], "slot_code": slot["code"], "slot_seq": slot["seq"], "expires_at": expires.isoformat()}


def register_body(hold_id: int, lock_id: str, session: dict[str, Any], slot: dict[str, Any]) -> dict[str, Any]:
    return {
        "hold_id": hold_id, "lock_id": lock_id, "session_code": session["code"], "slot_code": slot["code"],
        "slot_seq": slot["seq"], "patient": PATIENT, "fee_fen": session["fee_fen"], "self_pay_fen": 0,
        "insurance_fen": session["fee_fen"], "out_trade_no": f"T{hold_id}",
    }


def live_locks(sim: Simulator) -> dict[int, dict[str, Any]]:
    return {lock["hold_id"]: lock for lock in sim.state()["locks"] if lock["status"] == "live"}


def booked(client: SignedClient, sim: Simulator, hold_id: int = 1) -> tuple[dict[str, Any], dict[str, Any], str]:
    session, slot = free_numbers(client, 1)[0]
    lock_id = client.call("POST", wire.LOCKS, lock_body(hold_id, session, slot)).document["lock_id"]
    answer = client.call("POST", wire.REGISTRATIONS, register_body(hold_id, lock_id, session, slot))
    assert answer.status == 200
    return session, slot, answer.document["registration_no"]


# --- the process and its signatures --------------------------------------------------------------


def test_the_simulator_starts_fast_and_stops_with_its_context() -> None:
    started = time.monotonic()
    with running_simulator() as running:
        assert time.monotonic() - started < 2.0
        assert running.state()["hospital"] == "H1"
        process = running.process
    assert process.poll() is not None


def test_every_answer_is_signed_with_the_hospitals_secret(sim: Simulator) -> None:
    client = sim.client()
    for answer in (client.call("GET", wire.SCHEDULE), client.call("POST", wire.REGISTRATION_QUERY, {"hold_id": 404})):
        assert answer.signed
    assert client.call("POST", wire.REGISTRATION_QUERY, {"hold_id": 404}).code == wire.Code.NOT_FOUND


@pytest.mark.parametrize("spoil", ["wrong_secret", "stale", "unknown_hospital", "tampered_body"])
def test_a_badly_signed_request_is_refused_401(sim: Simulator, spoil: str) -> None:
    client = sim.client()
    target, body = wire.REGISTRATION_QUERY, json.dumps({"hold_id": 7}).encode()
    headers = {
        "wrong_secret": lambda: client.sign("POST", target, body, secret="not-the-secret"),
        "stale": lambda: client.sign("POST", target, body, timestamp=int(time.time()) - 400),
        "unknown_hospital": lambda: client.sign("POST", target, body, hospital="H2"),
        "tampered_body": lambda: client.sign("POST", target, b'{"hold_id": 8}'),
    }[spoil]()
    answer = client.send("POST", target, body, headers)
    assert (answer.status, answer.code, answer.signed) == (401, wire.Code.BAD_SIGNATURE, True)
    assert sim.state()["calls"]["bad_signature"] == 1


def test_a_replayed_nonce_is_refused(sim: Simulator) -> None:
    client = sim.client()
    body = json.dumps({"hold_id": 7}).encode()
    headers = client.sign("POST", wire.REGISTRATION_QUERY, body)
    assert client.send("POST", wire.REGISTRATION_QUERY, body, headers).status == 404
    assert client.send("POST", wire.REGISTRATION_QUERY, body, headers).status == 401


# --- idempotency by hold id, locks lapsing on the HIS side -----------------------------------------


def test_lock_is_idempotent_by_hold_and_a_taken_number_is_refused(sim: Simulator) -> None:
    client = sim.client()
    session, slot = free_numbers(client, 1)[0]
    first = client.call("POST", wire.LOCKS, lock_body(1, session, slot))
    again = client.call("POST", wire.LOCKS, lock_body(1, session, slot))
    assert first.status == again.status == 200 and first.document["lock_id"] == again.document["lock_id"]
    taken = client.call("POST", wire.LOCKS, lock_body(2, session, slot))
    assert (taken.status, taken.code) == (409, wire.Code.SLOT_TAKEN)
    assert sim.state()["sessions"][session["code"]]["locked"] == 1


def test_release_is_idempotent_and_a_late_lock_of_a_released_hold_is_refused(sim: Simulator) -> None:
    client = sim.client()
    session, slot = free_numbers(client, 1)[0]
    lock_id = client.call("POST", wire.LOCKS, lock_body(1, session, slot)).document["lock_id"]
    assert client.call("POST", wire.LOCK_RELEASE, {"hold_id": 1, "lock_id": lock_id}).document == {"released": True}
    assert client.call("POST", wire.LOCK_RELEASE, {"hold_id": 1, "lock_id": lock_id}).document == {"released": False}
    # The lock call that timed out arrives after guahao's release: it must not lock the number.
    assert client.call("POST", wire.LOCK_RELEASE, {"hold_id": 2, "lock_id": ""}).document == {"released": False}
    late = client.call("POST", wire.LOCKS, lock_body(2, session, slot))
    assert (late.status, late.code) == (409, wire.Code.LOCK_NOT_FOUND)
    assert live_locks(sim) == {}


def test_a_lock_lapses_at_expires_at_and_register_is_refused_lock_not_found(sim: Simulator) -> None:
    client = sim.client()
    session, slot = free_numbers(client, 1)[0]
    lock_id = client.call("POST", wire.LOCKS, lock_body(1, session, slot, seconds=60)).document["lock_id"]
    sim.advance(61)
    refused = client.call("POST", wire.REGISTRATIONS, register_body(1, lock_id, session, slot))
    assert (refused.status, refused.code) == (409, wire.Code.LOCK_NOT_FOUND)
    assert live_locks(sim) == {}
    assert client.call("POST", wire.LOCKS, lock_body(2, session, slot)).status == 200


def test_register_query_cancel_are_idempotent_and_cancel_after_check_in_is_refused(sim: Simulator) -> None:
    client = sim.client()
    session, slot, registration_no = booked(client, sim, hold_id=1)
    repeat = client.call("POST", wire.REGISTRATIONS, register_body(1, "whatever", session, slot))
    assert repeat.document["registration_no"] == registration_no
    assert client.call("POST", wire.REGISTRATION_QUERY, {"hold_id": 1}).document["status"] == "booked"
    day = client.call("GET", wire.REGISTRATIONS_OF_DAY, query={"date": session["date"]}).document
    assert [r["registration_no"] for r in day["registrations"]] == [registration_no]

    sim.attendance("checked_in", hold_id=1)
    refused = client.call("POST", wire.REGISTRATION_CANCEL, {"hold_id": 1})
    assert (refused.status, refused.code) == (409, wire.Code.ALREADY_VISITED)
    assert client.call("POST", wire.REGISTRATION_QUERY, {"hold_id": 1}).document["status"] == "checked_in"

    _, _, other_no = booked(client, sim, hold_id=2)
    for _ in range(2):
        cancelled = client.call("POST", wire.REGISTRATION_CANCEL, {"hold_id": 2, "registration_no": other_no})
        assert (cancelled.status, cancelled.document["status"]) == (200, "cancelled")


def test_a_cancel_before_the_register_arrives_keeps_the_late_register_out(sim: Simulator) -> None:
    client = sim.client()
    session, slot = free_numbers(client, 1)[0]
    lock_id = client.call("POST", wire.LOCKS, lock_body(1, session, slot)).document["lock_id"]
    assert client.call("POST", wire.REGISTRATION_CANCEL, {"hold_id": 1}).document["status"] == "cancelled"
    late = client.call("POST", wire.REGISTRATIONS, register_body(1, lock_id, session, slot))
    assert (late.status, late.code) == (409, wire.Code.LOCK_NOT_FOUND)
    assert live_locks(sim) == {} and sim.state()["registrations"] == []


def test_find_or_create_card_is_stable_and_refuses_another_name(sim: Simulator) -> None:
    client = sim.client()
    first, second = (client.call("POST", wire.PATIENT_CARD, PATIENT).document for _ in range(2))
    assert first["created"] and not second["created"] and first["card_no"] == second["card_no"]
    other = client.call("POST", wire.PATIENT_CARD, {**PATIENT, "name": "王五"})
    assert (other.status, other.code) == (422, wire.Code.PATIENT_REJECTED)


# --- the schedule and events at the hospital --------------------------------------------------------


def test_schedule_cursor_returns_only_changes_new_sessions_capacity_and_suspensions(sim: Simulator) -> None:
    client = sim.client()
    full = client.call("GET", wire.SCHEDULE, query={"days": 7}).document
    assert {"皮肤科", "儿科", "心血管内科"} <= {d["name"] for d in full["departments"]}
    assert all(dt.datetime.fromisoformat(s["end"]) - dt.datetime.fromisoformat(s["start"]) <= dt.timedelta(minutes=30) for x in full["sessions"] for s in x["slots"])
    assert any(s["state"] == "offline" for x in full["sessions"] for s in x["slots"])
    cursor = full["cursor"]
    assert client.call("GET", wire.SCHEDULE, query={"since": cursor, "days": 7}).document["sessions"] == []

    session, slot = free_numbers(client, 1)[0]
    client.call("POST", wire.LOCKS, lock_body(1, session, slot))
    sim.suspend(full["sessions"][-1]["code"], "专家外出会诊")
    added = sim.add_session(department_code="EK", period="evening", numbers=12)
    grown = sim.capacity(full["sessions"][0]["code"], 3)
    changes = client.call("GET", wire.SCHEDULE, query={"since": cursor, "days": 7}).document
    by_code = {s["code"]: s for s in changes["sessions"]}
    assert set(by_code) == {session["code"], full["sessions"][-1]["code"], added["code"], grown["code"]}
    assert by_code[full["sessions"][-1]["code"]]["status"] == "suspended"
    assert len(by_code[added["code"]]["slots"]) == 12
    assert len(by_code[grown["code"]]["slots"]) == len(full["sessions"][0]["slots"]) + 3
    assert next(s for s in by_code[session["code"]]["slots"] if s["code"] == slot["code"])["state"] == "locked"
    assert changes["departments"] == [] and client.call("GET", wire.SCHEDULE, query={"since": "garbage"}).status == 400


def test_check_in_and_visit_come_by_themselves_as_the_day_goes_on(sim: Simulator) -> None:
    client = sim.client()
    session, slot, _ = booked(client, sim, hold_id=1)
    sim.auto_attendance(1.0)
    assert client.call("POST", wire.REGISTRATION_QUERY, {"hold_id": 1}).document["status"] == "booked"
    until_window = dt.datetime.fromisoformat(slot["start"]) - dt.datetime.now(LOCAL_TZ)
    sim.advance(until_window.total_seconds() + 60)
    assert client.call("POST", wire.REGISTRATION_QUERY, {"hold_id": 1}).document["status"] == "checked_in"
    sim.advance(3600)
    visited = client.call("POST", wire.REGISTRATION_QUERY, {"hold_id": 1}).document
    assert visited["status"] == "visited" and visited["visited_at"]


# --- faults, each observed from a plain signed client ----------------------------------------------


def test_latency_delays_the_answer(sim: Simulator) -> None:
    sim.fault("query", "latency", latency_ms=400)
    started = time.monotonic()
    assert sim.client().call("POST", wire.REGISTRATION_QUERY, {"hold_id": 1}).status == 404
    assert time.monotonic() - started >= 0.4


def test_timeout_never_answers_and_does_nothing(sim: Simulator) -> None:
    client = sim.client(timeout=0.5)
    session, slot = free_numbers(client, 1)[0]
    sim.fault("lock", "timeout")
    with pytest.raises(NoAnswer):
        client.call("POST", wire.LOCKS, lock_body(1, session, slot))
    assert live_locks(sim) == {}
    assert client.call("POST", wire.LOCKS, lock_body(1, session, slot)).status == 200  # the fault was used once


def test_error_answers_500_and_does_nothing(sim: Simulator) -> None:
    client = sim.client()
    session, slot = free_numbers(client, 1)[0]
    sim.fault("lock", "error")
    answer = client.call("POST", wire.LOCKS, lock_body(1, session, slot))
    assert answer.status == 500 and answer.signed
    assert live_locks(sim) == {}


def test_lost_reply_does_the_change_and_the_repeat_finds_it(sim: Simulator) -> None:
    client = sim.client()
    session, slot = free_numbers(client, 1)[0]
    sim.fault("lock", "lost_reply")
    with pytest.raises(NoAnswer):
        client.call("POST", wire.LOCKS, lock_body(1, session, slot))
    lock_id = live_locks(sim)[1]["lock_id"]
    assert client.call("POST", wire.LOCKS, lock_body(1, session, slot)).document["lock_id"] == lock_id

    sim.fault("register", "lost_reply")
    with pytest.raises(NoAnswer):
        client.call("POST", wire.REGISTRATIONS, register_body(1, lock_id, session, slot))
    found = client.call("POST", wire.REGISTRATION_QUERY, {"hold_id": 1})
    assert found.status == 200 and found.document["status"] == "booked"


@pytest.mark.parametrize(
    ("operation", "path", "status", "code"),
    [
        ("lock", wire.LOCKS, 409, wire.Code.SLOT_TAKEN),
        ("register", wire.REGISTRATIONS, 409, wire.Code.LOCK_NOT_FOUND),
        ("query", wire.REGISTRATION_QUERY, 404, wire.Code.NOT_FOUND),
        ("cancel", wire.REGISTRATION_CANCEL, 409, wire.Code.ALREADY_VISITED),
        ("card", wire.PATIENT_CARD, 422, wire.Code.PATIENT_REJECTED),
    ],
)
def test_conflict_is_the_operations_natural_refusal_with_nothing_done(sim: Simulator, operation: str, path: str, status: int, code: str) -> None:
    client = sim.client()
    session, slot = free_numbers(client, 1)[0]
    bodies = {
        "lock": lock_body(1, session, slot), "register": register_body(1, "", session, slot),
        "query": {"hold_id": 1}, "cancel": {"hold_id": 1}, "card": PATIENT,
    }
    sim.fault(operation, "conflict")
    answer = client.call("POST", path, bodies[operation])
    assert (answer.status, answer.code) == (status, code)
    state = sim.state()
    assert state["locks"] == [] and state["registrations"] == []


def test_down_closes_every_operation_until_cleared_and_control_still_answers(sim: Simulator) -> None:
    client = sim.client()
    sim.fault("*", "down", times=-1)
    for method, path, body in [("GET", wire.SCHEDULE, None), ("POST", wire.REGISTRATION_QUERY, {"hold_id": 1}), ("POST", wire.PATIENT_CARD, PATIENT)]:
        with pytest.raises(NoAnswer):
            client.call(method, path, body)
    assert sim.state()["calls"]["schedule"] == 1
    sim.clear()
    assert client.call("GET", wire.SCHEDULE).status == 200


def test_times_and_rate_decide_which_calls_are_faulted(sim: Simulator) -> None:
    client = sim.client()
    sim.fault("query", "error", times=2)
    statuses = [client.call("POST", wire.REGISTRATION_QUERY, {"hold_id": 1}).status for _ in range(3)]
    assert statuses == [500, 500, 404]
    sim.fault("query", "error", times=-1, rate=0.5)
    statuses = [client.call("POST", wire.REGISTRATION_QUERY, {"hold_id": 1}).status for _ in range(60)]
    assert 10 < statuses.count(500) < 50 and statuses.count(404) + statuses.count(500) == 60
    sim.clear()
    with pytest.raises(ControlError) as refused:
        sim.fault("lock", "explode")
    assert refused.value.status == 400
