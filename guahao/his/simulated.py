"""An in-process HIS that keeps its own locks and registrations and fails on demand, for tests of
what guahao does when a hospital's system refuses, does not answer, or answers after the caller
gave up. It follows the port's contract (idempotent by our hold id), so a call repeated after a
lost reply finds what the first one did, as a real HIS must.

Faults are queued per operation: "refuse" (the HIS answers no), "timeout" (no answer, nothing
done) and "lost_reply" (the HIS did it, the answer never arrived).
"""

from __future__ import annotations

import threading

from guahao import clock
from guahao.faults import FaultQueue
from guahao.his.base import (
    HisRefused,
    HisTimeout,
    LockRequest,
    RegisterRequest,
    RegisterResult,
    RegistrationRecord,
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

    # --- what a test asks ----------------------------------------------------------------------

    def active_registrations(self) -> set[int]:
        return {hold_id for hold_id, record in self.registrations.items() if record.active}
