"""An in-process HIS that keeps its own locks and registrations and fails on demand, for tests of
what guahao does when a hospital's system refuses, does not answer, or answers after the caller
gave up. It follows the port's contract (idempotent by our hold id), so a call repeated after a
lost reply finds what the first one did, as a real HIS must.

Faults are queued per operation: "refuse" (the HIS answers no), "timeout" (no answer, nothing
done) and "lost_reply" (the HIS did it, the answer never arrived).

It also publishes a schedule (departments, doctors, sessions and their numbers) with a change
cursor, as `fetch_schedule` answers it, and moves its registrations through check-in and visit.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading

from guahao import clock
from guahao.faults import FaultQueue
from guahao.his.base import (
    HisDepartment,
    HisDoctor,
    HisRefused,
    HisSession,
    HisSlot,
    HisTimeout,
    LockRequest,
    RegisterRequest,
    RegisterResult,
    RegistrationRecord,
    ScheduleBatch,
)


class SimulatedHis(FaultQueue):
    refused_error = HisRefused
    timeout_error = HisTimeout

    def __init__(self) -> None:
        super().__init__()
        self._state = threading.Lock()
        self.locks: dict[int, str] = {}  # hold id → lock id
        self.registrations: dict[int, RegistrationRecord] = {}  # hold id → record
        self.calls: list[tuple[str, int]] = []
        # The published schedule: each item with the change number it was last changed at; the
        # cursor is the highest change number a fetch has seen.
        self._version = 0
        self.departments: dict[str, tuple[int, HisDepartment]] = {}
        self.doctors: dict[str, tuple[int, HisDoctor]] = {}
        self.sessions: dict[str, tuple[int, HisSession]] = {}

    def _call(self, operation: str, hold_id: int, effect):
        with self._state:
            self.calls.append((operation, hold_id))
            return self.act(operation, effect)

    # --- the port ------------------------------------------------------------------------------

    def lock_slot(self, request: LockRequest) -> str:
        return self._call("lock_slot", request.hold_id, lambda: self.locks.setdefault(request.hold_id, f"L{request.hold_id}"))

    def release_slot(self, *, hold_id: int, his_lock_id: str, slot_code: str) -> None:
        self._call("release_slot", hold_id, lambda: self.locks.pop(hold_id, None))

    def register(self, request: RegisterRequest) -> RegisterResult:
        def effect() -> RegisterResult:
            record = self.registrations.get(request.hold_id)
            if record is None or not record.active:
                stamp = clock.local_now().strftime("%Y%m%d")
                record = RegistrationRecord(registration_no=f"SIM{stamp}{request.hold_id:08d}", hold_id=request.hold_id)
                self.registrations[request.hold_id] = record
            return RegisterResult(registration_no=record.registration_no)

        return self._call("register", request.hold_id, effect)

    def query_registration(self, *, hold_id: int) -> RegistrationRecord | None:
        return self._call("query_registration", hold_id, lambda: self.registrations.get(hold_id))

    def cancel_registration(self, *, hold_id: int, registration_no: str = "") -> None:
        def effect() -> None:
            record = self.registrations.get(hold_id)
            if record is not None:
                self.registrations[hold_id] = RegistrationRecord(record.registration_no, status="cancelled", hold_id=hold_id)

        self._call("cancel_registration", hold_id, effect)

    def fetch_schedule(self, *, since: str = "", days: int = 14) -> ScheduleBatch:
        def effect() -> ScheduleBatch:
            after = int(since) if since.isdigit() else 0
            first, last = clock.today(), clock.today() + dt.timedelta(days=days)
            sessions = [s for v, s in self.sessions.values() if v > after and first <= s.date < last]
            return ScheduleBatch(
                cursor=str(self._version),
                departments=tuple(d for v, d in self.departments.values() if v > after),
                doctors=tuple(d for v, d in self.doctors.values() if v > after),
                sessions=tuple(sorted(sessions, key=lambda s: (s.date, s.start, s.code))),
            )

        return self._call("fetch_schedule", 0, effect)

    # --- what a test (the hospital) does -------------------------------------------------------

    def _bump(self) -> int:
        self._version += 1
        return self._version

    def publish(self, *items: HisDepartment | HisDoctor | HisSession) -> None:
        """Add or change departments, doctors and sessions (a session with all its numbers)."""
        with self._state:
            for item in items:
                table = {HisDepartment: self.departments, HisDoctor: self.doctors, HisSession: self.sessions}[type(item)]
                table[item.code] = (self._bump(), item)

    def session(self, code: str) -> HisSession:
        return self.sessions[code][1]

    def change_session(self, code: str, **changes) -> HisSession:
        """Change a session as the hospital does (status, suspend_reason, slots …)."""
        with self._state:
            changed = dataclasses.replace(self.sessions[code][1], **changes)
            self.sessions[code] = (self._bump(), changed)
            return changed

    def set_slot_state(self, session_code: str, slot_code: str, state: str) -> None:
        slots = tuple(
            dataclasses.replace(s, state=state) if s.code == slot_code else s for s in self.session(session_code).slots
        )
        self.change_session(session_code, slots=slots)

    def set_attendance(self, hold_id: int, status: str) -> None:
        """The patient took the number at the HIS (checked_in), was seen (visited), or the HIS
        cancelled the registration (cancelled)."""
        with self._state:
            record = self.registrations[hold_id]
            self.registrations[hold_id] = dataclasses.replace(record, status=status)

    # --- what a test asks ----------------------------------------------------------------------

    def active_registrations(self) -> set[int]:
        return {hold_id for hold_id, record in self.registrations.items() if record.active}


def make_his_session(
    code: str,
    *,
    department_code: str,
    doctor_code: str | None,
    date: dt.date,
    start: dt.time = dt.time(8, 0),
    numbers: int = 4,
    window_minutes: int = 30,
    fee_fen: int = 2500,
    registration_type: str = "普通号",
    states: dict[int, str] | None = None,
) -> HisSession:
    """A session as an HIS publishes it: `numbers` numbers, one per window of `window_minutes`,
    codes "{code}-{seq}", free unless `states` (seq → state) says otherwise."""
    starts_at = clock.at_local(date, start)
    step = dt.timedelta(minutes=window_minutes)
    slots = tuple(
        HisSlot(
            code=f"{code}-{seq}",
            seq=seq,
            start=starts_at + step * (seq - 1),
            end=starts_at + step * seq,
            state=(states or {}).get(seq, "free"),
        )
        for seq in range(1, numbers + 1)
    )
    return HisSession(
        code=code,
        department_code=department_code,
        doctor_code=doctor_code,
        registration_type=registration_type,
        date=date,
        period="morning" if start.hour < 12 else ("afternoon" if start.hour < 18 else "evening"),
        start=starts_at,
        end=starts_at + step * numbers,
        fee_fen=fee_fen,
        slots=slots,
    )
