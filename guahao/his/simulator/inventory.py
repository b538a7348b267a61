"""The simulated hospital's own records: departments, doctors, sessions with their numbers, locks,
registrations and patient cards, kept in memory behind one lock. Every operation of the contract is
a method that returns the answer's body or raises `Refusal` (an HTTP 4xx with a contract code).

Like a real HIS, it keys locks and registrations by the caller's hold id (the idempotency key), lets
a lock lapse by itself at its `expires_at`, keeps a tombstone of a released lock or a cancelled
hold so that a late duplicate of the lock or the register call cannot bring it back, and counts
every change of the schedule so that `since=<cursor>` returns only what changed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import heapq
import random
import threading
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from guahao.his.wire import Code

LOCAL_TZ = ZoneInfo("Asia/Shanghai")
MAX_LOCK_SECONDS = 30 * 60  # the HIS's own ceiling on a lock, whatever the caller asks
ID_TYPES = ("resident_id", "hk_macao_pass", "taiwan_pass", "foreigner_permit", "residence_permit")
PERIODS = {"morning": (dt.time(8, 0), dt.time(12, 0)), "afternoon": (dt.time(13, 30), dt.time(17, 30)), "evening": (dt.time(18, 0), dt.time(21, 0))}

# Contract breaks a test can switch on to show that `guahao his-check` names the operation.
BREAKS = {
    "signature": "accept requests whatever their signature",
    "unsigned": "answer without signature headers",
    "lock-idempotency": "a repeated lock for the same hold_id makes a new lock",
    "release-idempotency": "releasing an unknown or released lock is refused 404",
    "register-idempotency": "a repeated register for the same hold_id makes a new registration_no",
    "query-unknown": "querying an unknown hold answers 200 with an empty registration",
    "cancel-idempotency": "cancelling a cancelled registration is refused 409",
    "day": "registrations_of_day answers an empty list",
    "card": "find-or-create opens a new card every time",
}


class Refusal(Exception):
    """The HIS answers no: HTTP `status` with {"code", "message"}."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def body(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


def iso(moment: dt.datetime | None) -> str | None:
    return moment.astimezone(LOCAL_TZ).isoformat(timespec="seconds") if moment else None


@dataclass
class Slot:
    code: str
    seq: int
    start: dt.datetime
    end: dt.datetime
    offline: bool = False


@dataclass
class Session:
    code: str
    department_code: str
    doctor_code: str | None
    registration_type: str
    date: dt.date
    period: str
    start: dt.datetime
    end: dt.datetime
    fee_fen: int
    location: str
    slots: list[Slot]
    status: str = "open"
    suspend_reason: str = ""
    version: int = 0


@dataclass
class Lock:
    lock_id: str
    hold_id: int
    session_code: str
    slot_code: str
    expires_at: dt.datetime
    status: str = "live"  # live, released, expired, registered


@dataclass
class Registration:
    registration_no: str
    hold_id: int
    session_code: str
    slot_code: str
    visit_seq: int
    fee_fen: int
    self_pay_fen: int
    insurance_fen: int
    out_trade_no: str
    patient_name: str
    card_no: str
    status: str = "booked"  # booked, checked_in, visited, cancelled
    checked_in_at: dt.datetime | None = None
    visited_at: dt.datetime | None = None

    def answer(self) -> dict[str, Any]:
        return {
            "hold_id": self.hold_id,
            "registration_no": self.registration_no,
            "status": self.status,
            "fee_fen": self.fee_fen,
            "visit_seq": self.visit_seq,
            "checked_in_at": iso(self.checked_in_at),
            "visited_at": iso(self.visited_at),
        }


@dataclass
class Catalog:
    departments: dict[str, dict[str, Any]] = field(default_factory=dict)
    doctors: dict[str, dict[str, Any]] = field(default_factory=dict)


def _demo_catalog() -> Catalog:
    catalog = Catalog()
    for code, name, parent, location in [
        ("NK", "内科", None, "门诊楼2层"),
        ("NK01", "心血管内科", "NK", "门诊楼2层A区"),
        ("NK02", "消化内科", "NK", "门诊楼2层B区"),
        ("PFK", "皮肤科", None, "门诊楼3层"),
        ("EK", "儿科", None, "儿科楼1层"),
    ]:
        catalog.departments[code] = {"code": code, "name": name, "parent_code": parent, "location": location}
    for code, name, dept, title, specialty in [
        ("DR001", "王建国", "NK01", "主任医师", "冠心病、高血压"),
        ("DR002", "李芳", "NK01", "主治医师", "心律失常"),
        ("DR003", "赵明", "NK02", "副主任医师", "胃肠疾病"),
        ("DR004", "陈静", "PFK", "主任医师", "湿疹、银屑病"),
        ("DR005", "刘洋", "PFK", "住院医师", "痤疮"),
        ("DR006", "张晓红", "EK", "副主任医师", "小儿呼吸"),
        ("DR007", "孙磊", "EK", "主治医师", "儿童保健"),
    ]:
        catalog.doctors[code] = {"code": code, "name": name, "department_code": dept, "title": title, "specialty": specialty}
    return catalog


_FEES = {"主任医师": ("专家号", 5000), "副主任医师": ("专家号", 3000), "主治医师": ("普通号", 2000), "住院医师": ("普通号", 1500)}


class Hospital:
    """One hospital's HIS. Every public method takes `now` (aware) and holds the lock for its whole
    effect, so concurrent calls see each other's changes in a single order."""

    def __init__(self, *, code: str, seed: str = "demo", days: int = 7, now: dt.datetime) -> None:
        self.code, self.seed, self.days = code, seed, days
        self._mutex = threading.RLock()
        self._rng = random.Random(f"{code}:{seed}")
        self.counter = 0  # the change counter behind the schedule's cursor
        self.catalog = Catalog()
        self.catalog_version = 0
        self.sessions: dict[str, Session] = {}
        self.locks: dict[int, Lock] = {}  # hold id → its lock (tombstones kept)
        self.registrations: dict[int, Registration] = {}  # hold id → its registration
        # Indexes, so a lock costs the same after a day of release bursts as at 07:00: the holds
        # that ever locked or registered each number, and live locks by expiry.
        self._holds_of: dict[tuple[str, str], list[int]] = {}
        self._expiries: list[tuple[dt.datetime, int]] = []
        self.cancelled_holds: set[int] = set()  # holds cancelled before any registration came
        self.cards: dict[tuple[str, str], dict[str, str]] = {}
        self.breaks: set[str] = set()
        self.attendance_rate = 0.0
        self._serial = 0
        if seed == "demo":
            self._seed_demo(now)

    # --- seeding ---------------------------------------------------------------------------------

    def _bump(self) -> int:
        self.counter += 1
        return self.counter

    def _next(self) -> int:
        self._serial += 1
        return self._serial

    def _seed_demo(self, now: dt.datetime) -> None:
        self.catalog = _demo_catalog()
        self.catalog_version = self._bump()
        today = now.astimezone(LOCAL_TZ).date()
        for offset in range(self.days):
            day = today + dt.timedelta(days=offset)
            for index, doctor in enumerate(self.catalog.doctors.values()):
                kind, fee = _FEES[doctor["title"]]
                self._add_session(day=day, period="morning", department_code=doctor["department_code"], doctor_code=doctor["code"], registration_type=kind, fee_fen=fee)
                if (offset + index) % 2 == 0:  # most doctors see patients every other afternoon
                    self._add_session(day=day, period="afternoon", department_code=doctor["department_code"], doctor_code=doctor["code"], registration_type=kind, fee_fen=fee)
            for dept in ("PFK", "EK"):  # department clinics (普通号, no named doctor)
                for period in ("morning", "afternoon"):
                    self._add_session(day=day, period=period, department_code=dept, doctor_code=None, registration_type="普通号", fee_fen=1000)

    def _add_session(self, *, day: dt.date, period: str, department_code: str, doctor_code: str | None, registration_type: str, fee_fen: int, numbers: int | None = None, window_minutes: int | None = None) -> Session:
        first, last = PERIODS[period]
        start = dt.datetime.combine(day, first, LOCAL_TZ)
        end = dt.datetime.combine(day, last, LOCAL_TZ)
        owner = doctor_code or department_code
        code = f"S{day:%Y%m%d}-{owner}-{period[:2].upper()}"
        while code in self.sessions:
            code = f"{code}X"
        window = dt.timedelta(minutes=window_minutes or self._rng.choice((20, 30)))
        count = numbers if numbers is not None else self._rng.randint(10, 20)
        windows = max(1, int((end - start) / window))
        slots = []
        for seq in range(1, count + 1):
            slot_start = start + window * ((seq - 1) * windows // count)
            # Some numbers stay at the window (现场号): listed, never offered online.
            slots.append(Slot(code=f"{code}-{seq:02d}", seq=seq, start=slot_start, end=slot_start + window, offline=numbers is None and self._rng.random() < 0.15))
        location = self.catalog.departments.get(department_code, {}).get("location", "")
        session = Session(code=code, department_code=department_code, doctor_code=doctor_code, registration_type=registration_type, date=day, period=period, start=start, end=end, fee_fen=fee_fen, location=location, slots=slots, version=self._bump())
        self.sessions[code] = session
        return session

    # --- what the HIS knows about a number -------------------------------------------------------

    def _sweep(self, now: dt.datetime) -> None:
        """Locks lapse by themselves at expires_at; attendance moves as the day goes on."""
        while self._expiries and self._expiries[0][0] <= now:
            _, hold_id = heapq.heappop(self._expiries)
            lock = self.locks.get(hold_id)
            if lock is not None and lock.status == "live" and lock.expires_at <= now:
                lock.status = "expired"
                self._touch(lock.session_code)
        if self.attendance_rate > 0:
            self._move_attendance(now)

    def _move_attendance(self, now: dt.datetime) -> None:
        for reg in self.registrations.values():
            slot = self._slot(reg.session_code, reg.slot_code)
            # Each registration's fate is fixed by its number, so it does not change between sweeps.
            shows_up = int(hashlib.sha256(reg.registration_no.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < self.attendance_rate
            if not shows_up:
                continue
            if reg.status == "booked" and now >= slot.start - dt.timedelta(minutes=30):
                reg.status, reg.checked_in_at = "checked_in", max(now, slot.start - dt.timedelta(minutes=30))
            if reg.status == "checked_in" and now >= slot.end:
                reg.status, reg.visited_at = "visited", slot.end

    def _touch(self, session_code: str) -> None:
        if session_code in self.sessions:
            self.sessions[session_code].version = self._bump()

    def _slot(self, session_code: str, slot_code: str) -> Slot:
        for slot in self.sessions[session_code].slots:
            if slot.code == slot_code:
                return slot
        raise KeyError(slot_code)

    def _holder(self, session_code: str, slot_code: str) -> tuple[str, int] | None:
        """("locked"|"booked", hold id) of whoever has the number, or None when it is free."""
        holds = self._holds_of.get((session_code, slot_code), ())
        for hold_id in holds:
            reg = self.registrations.get(hold_id)
            if reg is not None and reg.session_code == session_code and reg.slot_code == slot_code and reg.status != "cancelled":
                return "booked", reg.hold_id
        for hold_id in holds:
            lock = self.locks.get(hold_id)
            if lock is not None and lock.status == "live" and lock.session_code == session_code and lock.slot_code == slot_code:
                return "locked", lock.hold_id
        return None

    def _on_number(self, session_code: str, slot_code: str, hold_id: int) -> None:
        holds = self._holds_of.setdefault((session_code, slot_code), [])
        if hold_id not in holds:
            holds.append(hold_id)

    def _slot_state(self, session: Session, slot: Slot) -> str:
        if slot.offline:
            return "offline"
        holder = self._holder(session.code, slot.code)
        return holder[0] if holder else "free"

    def _find_slot(self, body: dict[str, Any]) -> tuple[Session, Slot]:
        session = self.sessions.get(_text(body, "session_code"))
        if session is None:
            raise Refusal(400, Code.BAD_REQUEST, "unknown session_code")
        slot_code, seq = _text(body, "slot_code"), _integer(body, "slot_seq")
        for slot in session.slots:
            if slot.code == slot_code:
                if slot.seq != seq:
                    raise Refusal(400, Code.BAD_REQUEST, "slot_seq does not match slot_code")
                return session, slot
        raise Refusal(400, Code.BAD_REQUEST, "unknown slot_code")

    # --- the contract's operations ----------------------------------------------------------------

    def schedule(self, *, since: str, days: int, now: dt.datetime) -> dict[str, Any]:
        with self._mutex:
            self._sweep(now)
            today = now.astimezone(LOCAL_TZ).date()
            window_end = today + dt.timedelta(days=days - 1)
            after, seen_until = 0, None
            if since:
                try:
                    counter, _, until = since.partition(".")
                    after, seen_until = int(counter), dt.datetime.strptime(until, "%Y%m%d").date()
                except ValueError:
                    raise Refusal(400, Code.BAD_REQUEST, "unknown cursor") from None
                if after > self.counter:
                    raise Refusal(400, Code.BAD_REQUEST, "cursor from the future")
            catalog_changed = self.catalog_version > after
            sessions = []
            for session in sorted(self.sessions.values(), key=lambda s: (s.date, s.start, s.code)):
                if not today <= session.date <= window_end:
                    continue
                # A session that came into the day window since the last call counts as changed.
                if session.version > after or (seen_until is not None and session.date > seen_until):
                    sessions.append(self._session_answer(session))
            return {
                "cursor": f"{self.counter}.{window_end:%Y%m%d}",
                "departments": list(self.catalog.departments.values()) if catalog_changed else [],
                "doctors": list(self.catalog.doctors.values()) if catalog_changed else [],
                "sessions": sessions,
            }

    def _session_answer(self, session: Session) -> dict[str, Any]:
        return {
            "code": session.code,
            "department_code": session.department_code,
            "doctor_code": session.doctor_code,
            "registration_type": session.registration_type,
            "date": session.date.isoformat(),
            "period": session.period,
            "start": iso(session.start),
            "end": iso(session.end),
            "fee_fen": session.fee_fen,
            "status": session.status,
            "suspend_reason": session.suspend_reason,
            "location": session.location,
            "slots": [
                {"code": s.code, "seq": s.seq, "start": iso(s.start), "end": iso(s.end), "state": self._slot_state(session, s)}
                for s in session.slots
            ],
        }

    def lock(self, body: dict[str, Any], *, now: dt.datetime) -> dict[str, Any]:
        hold_id = _integer(body, "hold_id")
        expires_at = _moment(body, "expires_at")
        with self._mutex:
            self._sweep(now)
            session, slot = self._find_slot(body)
            existing = self.locks.get(hold_id)
            if existing is not None and "lock-idempotency" not in self.breaks:
                if existing.slot_code not in ("", slot.code):  # "": a release came before any lock
                    raise Refusal(400, Code.BAD_REQUEST, "this hold_id already locked another number")
                if existing.status in ("live", "registered"):
                    return {"lock_id": existing.lock_id, "expires_at": iso(existing.expires_at)}
                # A late duplicate must not bring back a lock the caller released or let lapse.
                raise Refusal(409, Code.LOCK_NOT_FOUND, f"the lock of this hold was {existing.status}; a hold is locked once")
            if hold_id in self.cancelled_holds:
                raise Refusal(409, Code.LOCK_NOT_FOUND, "this hold was cancelled")
            if expires_at <= now:
                raise Refusal(400, Code.BAD_REQUEST, "expires_at is in the past")
            if session.status == "suspended":
                raise Refusal(409, Code.SESSION_SUSPENDED, f"停诊: {session.suspend_reason}")
            if slot.start <= now:
                raise Refusal(409, Code.SESSION_CLOSED, "the number's time window has started")
            if slot.offline:
                raise Refusal(409, Code.SLOT_TAKEN, "the number is kept for the window (现场号)")
            holder = self._holder(session.code, slot.code)
            if holder is not None and holder[1] != hold_id:
                raise Refusal(409, Code.SLOT_TAKEN, f"the number is {holder[0]} for another hold")
            lock = Lock(lock_id=f"L{self.code}{self._next():08d}", hold_id=hold_id, session_code=session.code, slot_code=slot.code, expires_at=min(expires_at, now + dt.timedelta(seconds=MAX_LOCK_SECONDS)))
            self.locks[hold_id] = lock
            self._on_number(session.code, slot.code, hold_id)
            heapq.heappush(self._expiries, (lock.expires_at, hold_id))
            self._touch(session.code)
            return {"lock_id": lock.lock_id, "expires_at": iso(lock.expires_at)}

    def release(self, body: dict[str, Any], *, now: dt.datetime) -> dict[str, Any]:
        hold_id = _integer(body, "hold_id")
        with self._mutex:
            self._sweep(now)
            lock = self.locks.get(hold_id)
            if lock is None or lock.status != "live":
                if "release-idempotency" in self.breaks:
                    raise Refusal(404, Code.NOT_FOUND, "no live lock for this hold")
                if lock is None:  # a tombstone: the lock call may still arrive late
                    self.locks[hold_id] = Lock(lock_id="", hold_id=hold_id, session_code="", slot_code="", expires_at=now, status="released")
                return {"released": False}
            lock.status = "released"
            self._touch(lock.session_code)
            return {"released": True}

    def register(self, body: dict[str, Any], *, now: dt.datetime) -> dict[str, Any]:
        hold_id = _integer(body, "hold_id")
        lock_id = body.get("lock_id") or ""
        patient = body.get("patient")
        if not isinstance(patient, dict):
            raise Refusal(400, Code.BAD_REQUEST, "patient is required")
        name, id_type = _text(patient, "name"), _text(patient, "id_type")
        _text(patient, "id_number")
        fee, self_pay, insurance = _integer(body, "fee_fen"), _integer(body, "self_pay_fen"), _integer(body, "insurance_fen")
        out_trade_no = _text(body, "out_trade_no")
        if id_type not in ID_TYPES:
            raise Refusal(400, Code.BAD_REQUEST, "unknown id_type")
        if self_pay + insurance != fee or min(self_pay, insurance) < 0:
            raise Refusal(400, Code.BAD_REQUEST, "self_pay_fen + insurance_fen must equal fee_fen")
        with self._mutex:
            self._sweep(now)
            session, slot = self._find_slot(body)
            existing = self.registrations.get(hold_id)
            if existing is not None and "register-idempotency" not in self.breaks:
                if existing.status == "cancelled":
                    raise Refusal(409, Code.LOCK_NOT_FOUND, "the registration of this hold was cancelled")
                return existing.answer()
            if hold_id in self.cancelled_holds:
                raise Refusal(409, Code.LOCK_NOT_FOUND, "this hold was cancelled")
            if fee != session.fee_fen:
                raise Refusal(400, Code.BAD_REQUEST, f"fee_fen is {session.fee_fen} for this session")
            if session.status == "suspended":
                raise Refusal(409, Code.SESSION_SUSPENDED, f"停诊: {session.suspend_reason}")
            lock = self.locks.get(hold_id)
            has_lock = lock is not None and lock.slot_code == slot.code and lock.status in ("live", "registered")
            if existing is not None:  # broken on purpose: register again
                has_lock = True
            elif lock_id and not has_lock:
                raise Refusal(409, Code.LOCK_NOT_FOUND, "no live lock for this hold (expired or released)")
            elif not has_lock:  # a gateway without locks: the number must be free now
                if slot.start <= now:
                    raise Refusal(409, Code.SESSION_CLOSED, "the number's time window has started")
                if slot.offline or self._holder(session.code, slot.code) is not None:
                    raise Refusal(409, Code.SLOT_TAKEN, "the number is taken")
            if lock is not None and lock.status == "live":
                lock.status = "registered"
            card = _text(patient, "card_no") if patient.get("card_no") else self._card(patient)["card_no"]
            stamp = session.date.strftime("%Y%m%d")
            reg = Registration(
                registration_no=f"{self.code}{stamp}{self._next():06d}", hold_id=hold_id, session_code=session.code,
                slot_code=slot.code, visit_seq=slot.seq, fee_fen=fee, self_pay_fen=self_pay, insurance_fen=insurance,
                out_trade_no=out_trade_no, patient_name=name, card_no=card,
            )
            self.registrations[hold_id] = reg
            self._on_number(session.code, slot.code, hold_id)
            self._touch(session.code)
            return reg.answer()

    def query(self, body: dict[str, Any], *, now: dt.datetime) -> dict[str, Any]:
        hold_id = _integer(body, "hold_id")
        with self._mutex:
            self._sweep(now)
            reg = self.registrations.get(hold_id)
            if reg is None:
                if "query-unknown" in self.breaks:
                    return {"hold_id": hold_id, "registration_no": "", "status": "booked"}
                raise Refusal(404, Code.NOT_FOUND, "no registration for this hold")
            return reg.answer()

    def cancel(self, body: dict[str, Any], *, now: dt.datetime) -> dict[str, Any]:
        hold_id = _integer(body, "hold_id")
        with self._mutex:
            self._sweep(now)
            lock = self.locks.get(hold_id)
            if lock is not None and lock.status == "live":  # nothing registered yet: let the lock go too
                lock.status = "released"
                self._touch(lock.session_code)
            reg = self.registrations.get(hold_id)
            if reg is None:
                # Never made: a register call still on its way must not make it now.
                self.cancelled_holds.add(hold_id)
                return {"hold_id": hold_id, "registration_no": "", "status": "cancelled", "fee_fen": None, "visit_seq": None, "checked_in_at": None, "visited_at": None}
            if reg.status in ("checked_in", "visited"):
                raise Refusal(409, Code.ALREADY_VISITED, f"the patient is {reg.status}")
            if reg.status == "cancelled":
                if "cancel-idempotency" in self.breaks:
                    raise Refusal(409, Code.SESSION_CLOSED, "already cancelled")
                return reg.answer()
            reg.status = "cancelled"
            self._touch(reg.session_code)
            return reg.answer()

    def registrations_of_day(self, *, day: dt.date, now: dt.datetime) -> dict[str, Any]:
        with self._mutex:
            self._sweep(now)
            found = [] if "day" in self.breaks else [
                reg.answer() for reg in self.registrations.values() if self.sessions[reg.session_code].date == day
            ]
            return {"date": day.isoformat(), "registrations": found}

    def card(self, body: dict[str, Any], *, now: dt.datetime) -> dict[str, Any]:
        _text(body, "name")
        _text(body, "id_number")
        if _text(body, "id_type") not in ID_TYPES:
            raise Refusal(400, Code.BAD_REQUEST, "unknown id_type")
        with self._mutex:
            return self._card(body)

    def _card(self, patient: dict[str, Any]) -> dict[str, Any]:
        key = (patient["id_type"], patient["id_number"])
        known = self.cards.get(key)
        if known is not None and "card" not in self.breaks:
            if known["name"] != patient["name"]:
                raise Refusal(422, Code.PATIENT_REJECTED, "the name does not match the card on file")
            return {"card_no": known["card_no"], "created": False}
        card_no = f"C{self.code}{self._next():08d}"
        self.cards[key] = {"card_no": card_no, "name": patient["name"]}
        return {"card_no": card_no, "created": True}

    # --- the control endpoint's changes (events at the hospital) ----------------------------------

    def suspend(self, *, session_code: str, reason: str, now: dt.datetime) -> dict[str, Any]:
        with self._mutex:
            session = self._session(session_code)
            if session.status != "suspended" or session.suspend_reason != reason:
                session.status, session.suspend_reason = "suspended", reason
                self._touch(session.code)
            return self._session_answer(session)

    def add_session(self, body: dict[str, Any], *, now: dt.datetime) -> dict[str, Any]:
        with self._mutex:
            department = body.get("department_code") or next(iter(self.catalog.departments), "")
            if department not in self.catalog.departments:
                self.catalog.departments[department] = {"code": department, "name": department, "parent_code": None, "location": ""}
                self.catalog_version = self._bump()
            doctor = body.get("doctor_code")
            if doctor and doctor not in self.catalog.doctors:
                raise Refusal(400, Code.BAD_REQUEST, "unknown doctor_code")
            period = body.get("period", "evening")
            if period not in PERIODS:
                raise Refusal(400, Code.BAD_REQUEST, "period is morning, afternoon or evening")
            default_day = now.astimezone(LOCAL_TZ).date() + dt.timedelta(days=1)
            day = dt.date.fromisoformat(body["date"]) if body.get("date") else default_day
            session = self._add_session(
                day=day, period=period, department_code=department, doctor_code=doctor,
                registration_type=body.get("registration_type", "普通号"), fee_fen=int(body.get("fee_fen", 1000)),
                numbers=int(body.get("numbers", 10)), window_minutes=int(body.get("window_minutes", 30)),
            )
            return self._session_answer(session)

    def change_capacity(self, *, session_code: str, add: int, now: dt.datetime) -> dict[str, Any]:
        """`add` > 0 appends numbers in the session's last window; < 0 takes free numbers offline
        from the end (a number someone holds is never taken away)."""
        with self._mutex:
            self._sweep(now)
            session = self._session(session_code)
            if add > 0:
                last = session.slots[-1] if session.slots else None
                start = last.start if last else session.start
                end = last.end if last else session.start + dt.timedelta(minutes=30)
                top = max((s.seq for s in session.slots), default=0)
                for seq in range(top + 1, top + add + 1):
                    session.slots.append(Slot(code=f"{session.code}-{seq:02d}", seq=seq, start=start, end=end))
            else:
                for slot in reversed(session.slots):
                    if add == 0:
                        break
                    if not slot.offline and self._holder(session.code, slot.code) is None:
                        slot.offline, add = True, add + 1
            self._touch(session.code)
            return self._session_answer(session)

    def attend(self, body: dict[str, Any], *, now: dt.datetime) -> dict[str, Any]:
        status = body.get("status")
        if status not in ("checked_in", "visited"):
            raise Refusal(400, Code.BAD_REQUEST, "status is checked_in or visited")
        with self._mutex:
            reg = None
            if body.get("hold_id") is not None:
                reg = self.registrations.get(int(body["hold_id"]))
            elif body.get("registration_no"):
                reg = next((r for r in self.registrations.values() if r.registration_no == body["registration_no"]), None)
            if reg is None:
                raise Refusal(404, Code.NOT_FOUND, "no such registration")
            if reg.status == "cancelled":
                raise Refusal(409, Code.BAD_REQUEST, "the registration is cancelled")
            reg.checked_in_at = reg.checked_in_at or now
            reg.status = status
            if status == "visited":
                reg.visited_at = reg.visited_at or now
            return reg.answer()

    def _session(self, code: str) -> Session:
        if code not in self.sessions:
            raise Refusal(404, Code.NOT_FOUND, "unknown session_code")
        return self.sessions[code]

    def state(self, *, now: dt.datetime) -> dict[str, Any]:
        with self._mutex:
            self._sweep(now)
            sessions = {}
            for session in self.sessions.values():
                counts = {"free": 0, "locked": 0, "booked": 0, "offline": 0}
                for slot in session.slots:
                    counts[self._slot_state(session, slot)] += 1
                sessions[session.code] = {"date": session.date.isoformat(), "period": session.period, "status": session.status, "fee_fen": session.fee_fen, **counts}
            return {
                "hospital": self.code,
                "now": iso(now),
                "cursor": str(self.counter),
                "locks": [
                    {"hold_id": lock.hold_id, "lock_id": lock.lock_id, "session_code": lock.session_code, "slot_code": lock.slot_code, "expires_at": iso(lock.expires_at), "status": lock.status}
                    for lock in self.locks.values() if lock.lock_id
                ],
                "registrations": [
                    {**reg.answer(), "session_code": reg.session_code, "slot_code": reg.slot_code, "out_trade_no": reg.out_trade_no, "card_no": reg.card_no}
                    for reg in self.registrations.values()
                ],
                "sessions": sessions,
                "breaks": sorted(self.breaks),
                "attendance_rate": self.attendance_rate,
            }


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise Refusal(400, Code.BAD_REQUEST, f"{name} is required (a non-empty string)")
    return value


def _integer(body: dict[str, Any], name: str) -> int:
    value = body.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise Refusal(400, Code.BAD_REQUEST, f"{name} is required (an integer)")
    return value


def _moment(body: dict[str, Any], name: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(_text(body, name))
    except ValueError:
        raise Refusal(400, Code.BAD_REQUEST, f"{name} is not an ISO 8601 date-time") from None
    if moment.tzinfo is None:
        raise Refusal(400, Code.BAD_REQUEST, f"{name} needs a UTC offset")
    return moment
