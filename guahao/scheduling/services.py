"""Writes for schedules: making a session with its numbers, 停诊, numbers taken outside guahao."""

from __future__ import annotations

import datetime as dt

from django.db import connection, transaction

from guahao import clock
from guahao.catalog.models import Department, Doctor
from guahao.errors import Conflict, InvalidInput
from guahao.notifications import services as outbox
from guahao.scheduling.models import RegistrationType, Session, Slot
from guahao.scheduling.selectors import free_slot_q

MAX_WINDOW_MINUTES = 30


def _slot_windows(
    *, starts_at: dt.datetime, ends_at: dt.datetime, capacity: int, window_minutes: int
) -> list[tuple[dt.datetime, dt.datetime]]:
    """One (start, end) per number: the session cut into windows of `window_minutes` (the last one
    may be shorter), the numbers spread over them as evenly as possible, earlier windows first."""
    step = dt.timedelta(minutes=window_minutes)
    bounds: list[tuple[dt.datetime, dt.datetime]] = []
    cursor = starts_at
    while cursor < ends_at:
        bounds.append((cursor, min(cursor + step, ends_at)))
        cursor += step
    return [bounds[i * len(bounds) // capacity] for i in range(capacity)]


@transaction.atomic
def create_session(
    *,
    department: Department,
    doctor: Doctor | None,
    registration_type: RegistrationType,
    date: dt.date,
    period: str,
    start: dt.time,
    end: dt.time,
    fee_fen: int | None = None,
    capacity: int,
    window_minutes: int = MAX_WINDOW_MINUTES,
    location: str = "",
    his_code: str = "",
) -> Session:
    """Make a session (a doctor's clinic, or a department clinic when `doctor` is None) and its
    numbers. Start and end are local (Asia/Shanghai) times on `date`. Guarantees: every time window
    is at most 30 minutes (分时段); one session per doctor (or per doctorless department clinic)
    and date and period; the fee defaults to the registration type's."""
    if not 1 <= window_minutes <= MAX_WINDOW_MINUTES:
        raise InvalidInput(
            f"分时段时长须为 1–{MAX_WINDOW_MINUTES} 分钟（收到 {window_minutes} 分钟）", code="slot_window_too_long"
        )
    if period not in Session.Period.values:
        raise InvalidInput("出诊时段须为上午、下午或夜间", code="session_period_invalid")
    if capacity < 1:
        raise InvalidInput("号源数须至少为 1", code="session_capacity_invalid")
    if end <= start:
        raise InvalidInput("结束时间须晚于开始时间", code="session_time_invalid")
    hospital_id = department.hospital_id
    if registration_type.hospital_id != hospital_id or (doctor is not None and doctor.hospital_id != hospital_id):
        raise InvalidInput("科室、医生与号别须属于同一家医院", code="session_hospital_mismatch")

    same = Session.objects.filter(date=date, period=period)
    same = same.filter(doctor=doctor) if doctor is not None else same.filter(department=department, doctor=None)
    if same.exists():
        raise Conflict("该医生（科室）在此日期时段已有排班", code="session_exists")

    starts_at = clock.at_local(date, start)
    ends_at = clock.at_local(date, end)
    session = Session.objects.create(
        hospital_id=hospital_id,
        department=department,
        doctor=doctor,
        registration_type=registration_type,
        his_code=his_code,
        date=date,
        period=period,
        starts_at=starts_at,
        ends_at=ends_at,
        fee_fen=registration_type.default_fee_fen if fee_fen is None else fee_fen,
        capacity=capacity,
        location=location or department.location,
    )
    windows = _slot_windows(starts_at=starts_at, ends_at=ends_at, capacity=capacity, window_minutes=window_minutes)
    Slot.objects.bulk_create(
        Slot(session=session, seq=seq, window_start=w_start, window_end=w_end)
        for seq, (w_start, w_end) in enumerate(windows, start=1)
    )
    return session


def lock_session_status(session_id: int) -> str:
    """The session's status, read under a shared row lock held to the end of the caller's
    transaction. 停诊 takes the row FOR UPDATE before it changes the status, so it waits for every
    booking write that has read "open" this way, and every such write after it reads "suspended":
    a cross-row check the other side cannot slip past. FOR KEY SHARE is the lock a hold's foreign
    key already takes on this row, so concurrent bookings in one session never queue on each other
    and ordinary edits of the session are not blocked. (SQLite has one writer at a time: a plain
    read inside the transaction suffices.)"""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("lock_session_status must run inside a transaction")
    with connection.cursor() as cursor:
        lock = " FOR KEY SHARE" if connection.vendor == "postgresql" else ""
        cursor.execute(f"SELECT status FROM scheduling_session WHERE id = %s{lock}", [session_id])
        row = cursor.fetchone()
    return row[0] if row else Session.Status.SUSPENDED


@transaction.atomic
def suspend_session(*, session: Session, reason: str) -> Session:
    """停诊: the session stops taking bookings at once (check_bookable refuses it). Emits
    `session.suspended` in the same transaction, so booking can cancel and refund its
    registrations and notifications can tell the patients. Suspending twice changes nothing."""
    reason = reason.strip()
    if not reason:
        raise InvalidInput("请填写停诊原因", code="suspend_reason_required")
    # FOR UPDATE waits for the bookings that read "open" under their shared lock (see
    # lock_session_status), so the suspension's time comes after every registration they record.
    Session.objects.select_for_update().filter(id=session.id).values_list("id", flat=True).first()
    changed = Session.objects.filter(id=session.id, status=Session.Status.OPEN).update(
        status=Session.Status.SUSPENDED, suspend_reason=reason[:100], suspended_at=clock.now()
    )
    if changed:
        outbox.emit("session.suspended", session_id=session.id, reason=reason[:100])
    session.refresh_from_db(fields=["status", "suspend_reason", "suspended_at"])
    return session


@transaction.atomic
def take_slots_offline(*, session: Session, count: int, now: dt.datetime) -> int:
    """Mark up to `count` free numbers as taken outside guahao (window, phone, HIS import): BOOKED
    with the offline marker and no hold. Earliest numbers first; returns how many were taken."""
    ids = list(
        Slot.objects.filter(session=session).filter(free_slot_q(now)).order_by("seq").values_list("id", flat=True)[
            : max(count, 0)
        ]
    )
    return (
        Slot.objects.filter(id__in=ids)
        .filter(free_slot_q(now))
        .update(state=Slot.State.BOOKED, held_until=None, his_code=Slot.OFFLINE_CODE)
    )
