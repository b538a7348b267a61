"""The local slot pool: the platform itself owns the slots, so the HIS has nothing to lock.

Registration numbers are made here: date, hospital-local sequence from the hold id, and a check
letter, so they are unique, stable for a hold, and readable over the phone.
"""

from __future__ import annotations

from guahao import clock
from guahao.his.base import LockRequest, RegisterRequest, RegisterResult


class LocalPoolHis:
    def lock_slot(self, request: LockRequest) -> str:
        return ""  # nothing to lock outside guahao: the local claim is the lock

    def release_slot(self, *, his_lock_id: str, slot_code: str) -> None:
        return None

    def register(self, request: RegisterRequest) -> RegisterResult:
        stamp = clock.local_now().strftime("%Y%m%d")
        return RegisterResult(registration_no=f"GH{stamp}{request.hold_id:08d}")

    def cancel_registration(self, *, registration_no: str) -> None:
        return None
