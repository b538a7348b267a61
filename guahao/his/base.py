"""The HIS port: what guahao needs from a hospital information system.

Every method either returns, or raises HisRefused (the HIS answered no) or HisTimeout (no answer: the
request may or may not have taken effect). Callers never retry on the patient's behalf.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Protocol


class HisError(Exception):
    pass


class HisRefused(HisError):
    """The HIS answered and said no (slot taken, patient unknown, past deadline…)."""

    def __init__(self, reason: str = ""):
        self.reason = reason
        super().__init__(reason)


class HisTimeout(HisError):
    """The HIS did not answer in time; the request may have taken effect."""


@dataclass(frozen=True)
class LockRequest:
    hold_id: int
    session_code: str
    slot_code: str
    slot_seq: int
    expires_at: dt.datetime


@dataclass(frozen=True)
class RegisterRequest:
    hold_id: int
    his_lock_id: str
    session_code: str
    slot_code: str
    slot_seq: int
    patient_name: str
    id_type: str
    id_number: str
    fee_fen: int
    insurance: bool
    out_trade_no: str


@dataclass(frozen=True)
class RegisterResult:
    registration_no: str


class HisAdapter(Protocol):
    def lock_slot(self, request: LockRequest) -> str:
        """Lock a slot in the HIS; returns the HIS lock id."""
        ...

    def release_slot(self, *, his_lock_id: str, slot_code: str) -> None:
        """Release a lock (idempotent: releasing an unknown or released lock is not an error)."""
        ...

    def register(self, request: RegisterRequest) -> RegisterResult:
        """Turn a locked, paid slot into a registration."""
        ...

    def cancel_registration(self, *, registration_no: str) -> None:
        """Cancel a registration (idempotent)."""
        ...
