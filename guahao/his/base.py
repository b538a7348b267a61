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
    card_no: str = ""

    @property
    def insurance_fen(self) -> int:
        """The share paid from medical insurance (today all of it or none: the channel decides)."""
        return self.fee_fen if self.insurance else 0

    @property
    def self_pay_fen(self) -> int:
        return self.fee_fen - self.insurance_fen


@dataclass(frozen=True)
class RegisterResult:
    registration_no: str


@dataclass(frozen=True)
class RegistrationRecord:
    """What the HIS holds for one of our holds: its registration number and where the patient is
    (booked, checked_in, visited, or cancelled at the HIS)."""

    registration_no: str
    status: str = "booked"
    hold_id: int | None = None
    fee_fen: int | None = None
    visit_seq: int | None = None

    @property
    def active(self) -> bool:
        """Still a registration (not cancelled at the HIS)."""
        return self.status != "cancelled"


@dataclass(frozen=True)
class CardRequest:
    """A visiting patient as the HIS needs them to find or open a card (就诊卡)."""

    name: str
    id_type: str
    id_number: str
    phone: str = ""


# --- the schedule as the HIS publishes it (synced into guahao's mirror) ---------------------------


@dataclass(frozen=True)
class HisDepartment:
    code: str
    name: str
    parent_code: str | None = None
    location: str = ""


@dataclass(frozen=True)
class HisDoctor:
    code: str
    name: str
    department_code: str
    title: str = ""
    specialty: str = ""


@dataclass(frozen=True)
class HisSlot:
    code: str
    seq: int
    start: dt.datetime
    end: dt.datetime
    state: str = "free"  # free, locked, booked, offline


@dataclass(frozen=True)
class HisSession:
    code: str
    department_code: str
    doctor_code: str | None
    registration_type: str
    date: dt.date
    period: str  # morning, afternoon, evening
    start: dt.datetime
    end: dt.datetime
    fee_fen: int
    status: str = "open"  # open, suspended
    suspend_reason: str = ""
    location: str = ""
    slots: tuple[HisSlot, ...] = ()


@dataclass(frozen=True)
class ScheduleBatch:
    """What changed at the HIS since a cursor; `cursor` is passed as `since` next time."""

    cursor: str
    departments: tuple[HisDepartment, ...] = ()
    doctors: tuple[HisDoctor, ...] = ()
    sessions: tuple[HisSession, ...] = ()


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

    def fetch_schedule(self, *, since: str = "", days: int = 14) -> ScheduleBatch:
        """Departments, doctors, sessions and numbers changed since the cursor `since` ("" for
        everything), sessions from today on for `days` days."""
        ...

    def find_or_create_card(self, request: CardRequest) -> str:
        """The patient's card number at this hospital, opened if they have none."""
        ...

    def registrations_of_day(self, day: dt.date) -> list[RegistrationRecord]:
        """Every registration made through guahao for visits on `day` (reconciliation)."""
        ...
