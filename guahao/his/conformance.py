"""`guahao his-check URL`: the contract's checks run against any HIS gateway (docs/his.md). Each
check names the operation it tests; the run prints one line per check and fails when any fails.

It locks, registers and cancels one real number of the gateway, under hold ids from 9000000000 up
(far above guahao's own), and cleans up what it made (cancel, release) even when a check fails.
Standard library only, so a hospital engineer can read it next to guahao/his/wire.py.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit
from zoneinfo import ZoneInfo

from guahao.his import wire

LOCAL_TZ = ZoneInfo("Asia/Shanghai")
CHECK_HOLD_BASE = 9_000_000_000
TEST_PATIENT = {"name": "测试患者", "id_type": "resident_id", "id_number": "11010519491231002X", "phone": "13800000000"}
SLOT_STATES = {"free", "locked", "booked", "offline"}
PERIODS = {"morning", "afternoon", "evening"}


class NoAnswer(Exception):
    """The gateway did not answer: refused connection, closed without a reply, or timed out."""


@dataclass(frozen=True)
class Answer:
    status: int
    document: Any
    headers: dict[str, str]
    signed: bool  # the answer's signature checks with the hospital's secret

    @property
    def code(self) -> str:
        return self.document.get("code", "") if isinstance(self.document, dict) else ""


class SignedClient:
    """A plain client of the contract: signs each request, reads and verifies each answer."""

    def __init__(self, url: str, *, hospital: str, secret: str, timeout: float = 5.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.scheme, self.host, self.port = parts.scheme, parts.hostname, parts.port
        self.base_path = parts.path.rstrip("/")
        self.hospital, self.secret, self.timeout = hospital, secret, timeout

    def target(self, path: str, query: dict[str, Any] | None = None) -> str:
        return self.base_path + path + (f"?{urlencode(query)}" if query else "")

    def sign(self, method: str, target: str, body: bytes, *, secret: str | None = None, hospital: str | None = None, timestamp: int | None = None) -> dict[str, str]:
        headers = wire.signed_request_headers(secret or self.secret, hospital=hospital or self.hospital, method=method, target=target, body=body)
        if timestamp is not None:  # a deliberately stale request, signed correctly
            headers[wire.TIMESTAMP_HEADER] = str(timestamp)
            headers[wire.SIGNATURE_HEADER] = wire.request_signature(
                secret or self.secret, timestamp=str(timestamp), nonce=headers[wire.NONCE_HEADER], method=method, target=target, body=body
            )
        return headers

    def call(self, method: str, path: str, document: dict[str, Any] | None = None, *, query: dict[str, Any] | None = None) -> Answer:
        body = json.dumps(document, ensure_ascii=False).encode() if document is not None else b""
        target = self.target(path, query)
        return self.send(method, target, body, self.sign(method, target, body))

    def send(self, method: str, target: str, body: bytes, headers: dict[str, str]) -> Answer:
        factory = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
        connection = factory(self.host, self.port, timeout=self.timeout)
        try:
            connection.request(method, target, body=body or None, headers=headers)
            response = connection.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException) as error:
            raise NoAnswer(f"{type(error).__name__}: {error}" if str(error) else type(error).__name__) from error
        finally:
            connection.close()
        answer_headers = dict(response.getheaders())
        try:
            document = json.loads(raw) if raw else None
        except ValueError:
            document = None
        signed = wire.verify_response(self.secret, answer_headers, status=response.status, body=raw).ok
        return Answer(status=response.status, document=document, headers=answer_headers, signed=signed)


@dataclass(frozen=True)
class Check:
    operation: str
    passed: bool
    detail: str

    def line(self) -> str:
        return f"{'✓' if self.passed else '✗'} {self.operation}: {self.detail}"


@dataclass
class _Run:
    client: SignedClient
    checks: list[Check] = field(default_factory=list)
    unsigned: dict[str, list[str]] = field(default_factory=dict)  # operation → answers not signed

    def expect(self, operation: str, passed: bool, detail: str, why: str = "") -> bool:
        self.checks.append(Check(operation, passed, detail if passed or not why else f"{detail} — {why}"))
        return passed

    def call(self, operation: str, method: str, path: str, document: dict[str, Any] | None = None, *, query: dict[str, Any] | None = None) -> Answer | None:
        try:
            answer = self.client.call(method, path, document, query=query)
        except NoAnswer as error:
            self.expect(operation, False, f"{method} {path} answered", f"no answer ({error})")
            return None
        self._note(operation, method, path, answer)
        return answer

    def _note(self, operation: str, method: str, path: str, answer: Answer) -> None:
        if not answer.signed:
            self.unsigned.setdefault(operation, []).append(f"{method} {path} → {answer.status}")


def _describe(answer: Answer | None) -> str:
    if answer is None:
        return "no answer"
    return f"got {answer.status} {json.dumps(answer.document, ensure_ascii=False)[:160]}"


def _schedule_problems(document: Any) -> list[str]:
    if not isinstance(document, dict):
        return ["the answer is not a JSON object"]
    problems = [f"missing {key}" for key in ("cursor", "departments", "doctors", "sessions") if key not in document]
    if problems:
        return problems
    if not isinstance(document["cursor"], str):
        problems.append("cursor is not a string")
    for department in document["departments"]:
        if not {"code", "name"} <= set(department):
            problems.append(f"department without code or name: {department}")
    for doctor in document["doctors"]:
        if not {"code", "name", "department_code"} <= set(doctor):
            problems.append(f"doctor without code, name or department_code: {doctor}")
    required = {"code", "department_code", "registration_type", "date", "period", "start", "end", "fee_fen", "status", "slots"}
    for session in document["sessions"]:
        missing = required - set(session)
        if missing:
            problems.append(f"session {session.get('code')} lacks {', '.join(sorted(missing))}")
            continue
        if session["period"] not in PERIODS or session["status"] not in ("open", "suspended"):
            problems.append(f"session {session['code']}: period or status outside the contract")
        if not isinstance(session["fee_fen"], int) or session["fee_fen"] < 0:
            problems.append(f"session {session['code']}: fee_fen is not a non-negative integer")
        for slot in session["slots"]:
            if not {"code", "seq", "start", "end", "state"} <= set(slot) or slot["state"] not in SLOT_STATES:
                problems.append(f"session {session['code']}: a slot outside the contract: {slot}")
                continue
            try:
                start, end = dt.datetime.fromisoformat(slot["start"]), dt.datetime.fromisoformat(slot["end"])
            except (TypeError, ValueError):
                problems.append(f"slot {slot['code']}: start/end are not ISO 8601")
                continue
            if start.tzinfo is None or not dt.timedelta(0) < end - start <= dt.timedelta(minutes=30):
                problems.append(f"slot {slot['code']}: needs an offset and a window of at most 30 minutes")
    return problems[:5]


def _free_numbers(document: dict[str, Any], now: dt.datetime) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(session, slot) pairs free now whose window starts more than an hour from now."""
    found = []
    for session in document.get("sessions", []):
        if session.get("status") != "open":
            continue
        for slot in session.get("slots", []):
            try:
                starts = dt.datetime.fromisoformat(slot["start"])
            except (KeyError, TypeError, ValueError):
                continue
            if slot.get("state") == "free" and starts > now + dt.timedelta(hours=1):
                found.append((session, slot))
    return found


def run_checks(url: str, *, hospital: str, secret: str, timeout: float = 5.0, days: int = 7) -> list[Check]:
    """Every check of the contract against the gateway at `url`; cleans up what it made."""
    run = _Run(SignedClient(url, hospital=hospital, secret=secret, timeout=timeout))
    base = CHECK_HOLD_BASE + secrets.randbelow(900_000_000) * 10
    made: dict[str, Any] = {"locks": [], "registered": []}
    try:
        _check_signatures(run, unknown_hold=base + 9)
        numbers = _check_schedule(run, days=days)
        if len(numbers) < 2:
            run.expect("schedule", False, "two free numbers to test with", f"found {len(numbers)} free numbers more than an hour ahead")
            return run.checks
        _check_booking(run, numbers, base, made)
    finally:
        _clean_up(run.client, made)
        if run.unsigned:
            for operation, answers in sorted(run.unsigned.items()):
                run.expect(operation, False, "answers are signed", f"unsigned or badly signed: {'; '.join(answers[:3])}")
        else:
            run.expect("signature", True, "every answer carried a valid signature")
    return run.checks


def _check_signatures(run: _Run, *, unknown_hold: int) -> None:
    client = run.client
    method, target = "POST", client.target(wire.REGISTRATION_QUERY)
    body = json.dumps({"hold_id": unknown_hold}).encode()

    def refused(detail: str, headers: dict[str, str]) -> None:
        try:
            answer = client.send(method, target, body, headers)
        except NoAnswer as error:
            run.expect("signature", False, detail, f"no answer ({error})")
            return
        run._note("signature", method, wire.REGISTRATION_QUERY, answer)
        run.expect("signature", answer.status == 401 and answer.code == wire.Code.BAD_SIGNATURE, detail, f"expected 401 BAD_SIGNATURE, {_describe(answer)}")

    refused("a wrong signature is refused (401 BAD_SIGNATURE)", client.sign(method, target, body, secret=client.secret + "-wrong"))
    refused("a stale timestamp is refused", client.sign(method, target, body, timestamp=int(time.time()) - 900))
    refused("an unknown hospital is refused", client.sign(method, target, body, hospital=f"NOT-{client.hospital}"))
    headers = client.sign(method, target, body)
    try:
        first = client.send(method, target, body, headers)
    except NoAnswer as error:
        run.expect("signature", False, "a correctly signed request is accepted", f"no answer ({error})")
        return
    run._note("query", method, wire.REGISTRATION_QUERY, first)
    if run.expect("signature", first.status != 401, "a correctly signed request is accepted", _describe(first)):
        refused("a replayed nonce is refused", headers)


def _check_schedule(run: _Run, *, days: int) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    full = run.call("schedule", "GET", wire.SCHEDULE, query={"days": days})
    if full is None:
        return []
    problems = _schedule_problems(full.document) if full.status == 200 else [_describe(full)]
    if not run.expect("schedule", not problems, f"the answer has the contract's shape ({len(full.document.get('sessions', [])) if not problems else 0} sessions)", "; ".join(problems)):
        return []
    count = len(full.document["sessions"])
    later = run.call("schedule", "GET", wire.SCHEDULE, query={"since": full.document["cursor"], "days": days})
    if later is not None:
        problems = _schedule_problems(later.document) if later.status == 200 else [_describe(later)]
        fewer = count < 2 or len(later.document.get("sessions", [])) < count if not problems else False
        run.expect("schedule", not problems and fewer, "since=<cursor> answers only what changed", "; ".join(problems) or f"all {count} sessions came back again")
    return _free_numbers(full.document, dt.datetime.now(LOCAL_TZ))


def _lock_body(hold_id: int, session: dict[str, Any], slot: dict[str, Any]) -> dict[str, Any]:
    expires = dt.datetime.now(LOCAL_TZ).replace(microsecond=0) + dt.timedelta(minutes=5)
    return {"hold_id": hold_id, "session_code": session["code"], "slot_code": slot["code"], "slot_seq": slot["seq"], "expires_at": expires.isoformat()}


def _check_booking(run: _Run, numbers: list[tuple[dict[str, Any], dict[str, Any]]], base: int, made: dict[str, Any]) -> None:
    (session, slot), (other_session, other_slot) = numbers[0], numbers[-1]
    hold_a, hold_b, hold_c = base + 1, base + 2, base + 3
    made["locks"] += [hold_a, hold_b, hold_c]

    # lock, and the same lock again
    first = run.call("lock", "POST", wire.LOCKS, _lock_body(hold_a, session, slot))
    lock_id = first.document.get("lock_id") if first is not None and first.status == 200 and isinstance(first.document, dict) else None
    if not run.expect("lock", bool(lock_id) and "expires_at" in first.document, f"locks a free number ({slot['code']})", _describe(first)):
        return
    again = run.call("lock", "POST", wire.LOCKS, _lock_body(hold_a, session, slot))
    run.expect("lock", again is not None and again.status == 200 and again.document.get("lock_id") == lock_id, "the same hold_id again returns the same lock", _describe(again))
    taken = run.call("lock", "POST", wire.LOCKS, _lock_body(hold_c, session, slot))
    run.expect("lock", taken is not None and taken.status == 409 and taken.code == wire.Code.SLOT_TAKEN, "a number locked for another hold is refused 409 SLOT_TAKEN", _describe(taken))

    # card
    cards = [run.call("card", "POST", wire.PATIENT_CARD, TEST_PATIENT) for _ in range(2)]
    card_nos = [a.document.get("card_no") if a is not None and a.status == 200 and isinstance(a.document, dict) else None for a in cards]
    run.expect("card", bool(card_nos[0]) and card_nos[0] == card_nos[1], "find-or-create gives the same card twice", f"got {card_nos}")

    # register, and the same register again
    register = {
        "hold_id": hold_a, "lock_id": lock_id, "session_code": session["code"], "slot_code": slot["code"], "slot_seq": slot["seq"],
        "patient": {**TEST_PATIENT, "card_no": card_nos[0] or ""}, "fee_fen": session["fee_fen"],
        "self_pay_fen": session["fee_fen"], "insurance_fen": 0, "out_trade_no": f"HISCHECK{hold_a}",
    }
    done = run.call("register", "POST", wire.REGISTRATIONS, register)
    registration_no = done.document.get("registration_no") if done is not None and done.status == 200 and isinstance(done.document, dict) else None
    if registration_no:
        made["registered"].append(hold_a)
    if not run.expect("register", bool(registration_no) and done.document.get("status") == "booked", "registers the locked number (status booked)", _describe(done)):
        return
    repeat = run.call("register", "POST", wire.REGISTRATIONS, register)
    run.expect("register", repeat is not None and repeat.status == 200 and repeat.document.get("registration_no") == registration_no, "the same hold_id again returns the same registration_no", _describe(repeat))

    # query
    found = run.call("query", "POST", wire.REGISTRATION_QUERY, {"hold_id": hold_a})
    run.expect("query", found is not None and found.status == 200 and found.document.get("registration_no") == registration_no and found.document.get("status") == "booked", "returns the hold's registration", _describe(found))
    unknown = run.call("query", "POST", wire.REGISTRATION_QUERY, {"hold_id": base + 8})
    run.expect("query", unknown is not None and unknown.status == 404 and unknown.code == wire.Code.NOT_FOUND, "an unknown hold is 404 NOT_FOUND", _describe(unknown))

    # registrations of the day
    day = run.call("day", "GET", wire.REGISTRATIONS_OF_DAY, query={"date": session["date"]})
    listed = day.document.get("registrations", []) if day is not None and day.status == 200 and isinstance(day.document, dict) else []
    run.expect("day", any(r.get("registration_no") == registration_no and r.get("hold_id") == hold_a for r in listed), f"registrations_of_day {session['date']} lists the registration", _describe(day))

    # cancel, and cancel again
    cancelled = run.call("cancel", "POST", wire.REGISTRATION_CANCEL, {"hold_id": hold_a, "registration_no": registration_no})
    run.expect("cancel", cancelled is not None and cancelled.status == 200 and cancelled.document.get("status") == "cancelled", "cancels the registration", _describe(cancelled))
    twice = run.call("cancel", "POST", wire.REGISTRATION_CANCEL, {"hold_id": hold_a, "registration_no": registration_no})
    if run.expect("cancel", twice is not None and twice.status == 200 and twice.document.get("status") == "cancelled", "cancelling again answers cancelled", _describe(twice)):
        made["registered"].remove(hold_a)

    # release, release again, release of a hold never locked
    other = run.call("release", "POST", wire.LOCKS, _lock_body(hold_b, other_session, other_slot))
    other_lock = other.document.get("lock_id", "") if other is not None and other.status == 200 and isinstance(other.document, dict) else ""
    if not run.expect("release", bool(other_lock), f"a second number is locked to release ({other_slot['code']})", _describe(other)):
        return
    released = run.call("release", "POST", wire.LOCK_RELEASE, {"hold_id": hold_b, "lock_id": other_lock})
    run.expect("release", released is not None and released.status == 200 and released.document.get("released") is True, "releases the lock (released: true)", _describe(released))
    repeat_release = run.call("release", "POST", wire.LOCK_RELEASE, {"hold_id": hold_b, "lock_id": other_lock})
    never = run.call("release", "POST", wire.LOCK_RELEASE, {"hold_id": base + 7, "lock_id": ""})
    run.expect(
        "release",
        all(a is not None and a.status == 200 and isinstance(a.document, dict) and "released" in a.document for a in (repeat_release, never)),
        "releasing again, or a hold never locked, is not an error",
        f"{_describe(repeat_release)}; {_describe(never)}",
    )
    again_free = run.call("lock", "POST", wire.LOCKS, _lock_body(hold_c, other_session, other_slot))
    run.expect("release", again_free is not None and again_free.status == 200, "the released number can be locked again", _describe(again_free))


def _clean_up(client: SignedClient, made: dict[str, Any]) -> None:
    """Best effort: cancel what was registered, release what was locked; never raises."""
    for hold_id in made["registered"]:
        with contextlib.suppress(NoAnswer):
            client.call("POST", wire.REGISTRATION_CANCEL, {"hold_id": hold_id})
    for hold_id in made["locks"]:
        with contextlib.suppress(NoAnswer):
            client.call("POST", wire.LOCK_RELEASE, {"hold_id": hold_id, "lock_id": ""})

