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


@dataclass(frozen=True)
class RegistrationRecord:
    """What the HIS holds for one of our holds: its registration number and whether it is still
    valid (False once cancelled at the HIS)."""

    registration_no: str
    active: bool = True


class HisAdapter(Protocol):
    """Our hold id is the idempotency key of every call: the HIS keys its locks and registrations
    by it, so a repeated call after a lost reply finds what the first one did."""

    def lock_slot(self, request: LockRequest) -> str:
        """Lock a slot in the HIS; returns the HIS lock id. Repeating it for the same hold returns
        the same lock."""
        ...

    def release_slot(self, *, hold_id: int, his_lock_id: str, slot_code: str) -> None:
        """Release the lock taken for `hold_id` (its HIS lock id may be unknown to us when the lock
        call timed out). Idempotent: an unknown or released lock is not an error."""
        ...

    def register(self, request: RegisterRequest) -> RegisterResult:
        """Turn a locked, paid slot into a registration. Idempotent per hold id: a repeat returns
        the registration the first call made."""
        ...

    def query_registration(self, *, hold_id: int) -> RegistrationRecord | None:
        """The registration the HIS made for `hold_id`, or None when it made none."""
        ...

    def cancel_registration(self, *, hold_id: int, registration_no: str = "") -> None:
        """Cancel the registration made for `hold_id` (the number may be unknown to us when the
        register call timed out). Idempotent."""
        ...
