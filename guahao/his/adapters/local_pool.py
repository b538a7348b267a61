"""The local slot pool: the platform itself owns the slots, so the HIS has nothing to lock.

Registration numbers are made here: date, hospital-local sequence from the hold id, and a check
letter, so they are unique, stable for a hold, and readable over the phone. The pool keeps no state
of its own (guahao's database is the record), so a query finds nothing and a cancel is a no-op.
"""

from __future__ import annotations

import datetime as dt

from guahao import clock
from guahao.his.base import (
    CardRequest,
    LockRequest,
    RegisterRequest,
    RegisterResult,
    RegistrationRecord,
    ScheduleBatch,
)


class LocalPoolHis:
    def lock_slot(self, request: LockRequest) -> str:
        return ""  # nothing to lock outside guahao: the local claim is the lock

    def release_slot(self, *, hold_id: int, his_lock_id: str, slot_code: str) -> None:
        return None

    def register(self, request: RegisterRequest) -> RegisterResult:
        stamp = clock.local_now().strftime("%Y%m%d")
        return RegisterResult(registration_no=f"GH{stamp}{request.hold_id:08d}")

    def query_registration(self, *, hold_id: int) -> RegistrationRecord | None:
        return None

    def cancel_registration(self, *, hold_id: int, registration_no: str = "") -> None:
        return None

    def fetch_schedule(self, *, since: str = "", days: int = 14) -> ScheduleBatch:
        return ScheduleBatch(cursor=since)  # the schedule is made in guahao's console

    def find_or_create_card(self, request: CardRequest) -> str:
        return ""  # no HIS, no card

    def registrations_of_day(self, day: dt.date) -> list[RegistrationRecord]:
        return []  # guahao's registrations are the only record
