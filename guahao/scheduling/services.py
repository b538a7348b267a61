"""Writes for schedules: making a session with its numbers (one by one or a week from the weekly
templates), 加号, 停诊 and its undo, numbers taken outside guahao."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

from django.db import connection, transaction
from django.db.models import F, Max

from guahao import clock
from guahao.catalog.models import Department, Doctor, Hospital
from guahao.errors import Conflict, InvalidInput, NotFound
from guahao.notifications import services as outbox
from guahao.scheduling.models import RegistrationType, Session, Slot, WeeklyTemplate
from guahao.scheduling.selectors import free_slot_q, release_rule_for

log = logging.getLogger("guahao.scheduling")

MAX_WINDOW_MINUTES = 30
MAX_EXTRA_SLOTS = 50


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


def offline_positions(*, capacity: int, percent: int) -> set[int]:
    """Which numbers (0-based, of `capacity`) stay for the window: `percent` of them rounded down,
    one in the middle of each of as many equal stretches, so walk-in numbers are spread over the
    whole session instead of all being the last ones."""
    count = capacity * max(0, min(percent, 90)) // 100
    return {(2 * i + 1) * capacity // (2 * count) for i in range(count)}


def _same_session(*, department: Department | int, doctor: Doctor | int | None, date: dt.date, period: str) -> bool:
    same = Session.objects.filter(date=date, period=period)
    same = same.filter(doctor=doctor) if doctor is not None else same.filter(department=department, doctor=None)
    return same.exists()


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
    `capacity` numbers. Start and end are local (Asia/Shanghai) times on `date`. Guarantees: every
    time window is at most 30 minutes (分时段); one session per doctor (or per doctorless
    department clinic) and date and period; the fee defaults to the registration type's; the
    release rule's offline_percent of the numbers (rounded down, spread through the session) are
    made OFFLINE, never offered online, and the session's `capacity` counts the online ones."""
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

    if _same_session(department=department, doctor=doctor, date=date, period=period):
        raise Conflict("该医生（科室）在此日期时段已有排班", code="session_exists")
    offline = offline_positions(capacity=capacity, percent=release_rule_for(department).offline_percent)

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
        capacity=capacity - len(offline),
        location=location or department.location,
    )
    windows = _slot_windows(starts_at=starts_at, ends_at=ends_at, capacity=capacity, window_minutes=window_minutes)
    Slot.objects.bulk_create(
        Slot(
            session=session,
            seq=seq,
            window_start=w_start,
            window_end=w_end,
            state=Slot.State.OFFLINE if seq - 1 in offline else Slot.State.FREE,
        )
        for seq, (w_start, w_end) in enumerate(windows, start=1)
    )
    return session


@dataclass
class WeekResult:
    """What `create_week_from_templates` did: the sessions it made, and each line it left out with why."""

    created: list[Session] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _make_from_templates(*, hospital: Hospital, dates: list[dt.date]) -> WeekResult:
    """The sessions of `dates` from the hospital's active weekly template lines; a line whose
    session already exists, whose date has passed, or whose department or doctor is switched off
    is skipped and reported, so running it twice makes nothing new."""
    today = clock.today()
    result = WeekResult()
    by_weekday = {date.weekday(): date for date in dates}
    lines = (
        WeeklyTemplate.objects.filter(hospital=hospital, is_active=True, weekday__in=list(by_weekday))
        .select_related("department", "doctor", "registration_type")
        .order_by("weekday", "start", "department__sort_order", "id")
    )
    for line in lines:
        date = by_weekday[line.weekday]
        label = f"{date:%m月%d日} {line}"
        if date < today:
            result.skipped.append(f"{label}：日期已过")
        elif not line.department.is_active or (line.doctor is not None and not line.doctor.is_active):
            result.skipped.append(f"{label}：科室或医生已停用")
        elif _same_session(department=line.department, doctor=line.doctor, date=date, period=line.period):
            result.skipped.append(f"{label}：已有排班")
        else:
            result.created.append(
                create_session(
                    department=line.department,
                    doctor=line.doctor,
                    registration_type=line.registration_type,
                    date=date,
                    period=line.period,
                    start=line.start,
                    end=line.end,
                    fee_fen=line.fee_fen,
                    capacity=line.capacity,
                    window_minutes=line.window_minutes,
                    location=line.location,
                )
            )
    return result


@transaction.atomic
def release_day_from_templates(*, hospital: Hospital, date: dt.date) -> WeekResult:
    """The scheduler's daily release (放号): the sessions of the day that has just become bookable,
    from the weekly template lines, unless staff (or an earlier run) already made them."""
    result = _make_from_templates(hospital=hospital, dates=[date])
    log.info(
        "day released from templates",
        extra={"hospital_id": hospital.id, "date": date.isoformat(), "sessions_made": len(result.created)},
    )
    return result


@transaction.atomic
def create_week_from_templates(*, hospital: Hospital, week_start: dt.date, staff_username: str) -> WeekResult:
    """Make the week starting on Monday `week_start` from the hospital's active weekly template
    lines, through `create_session` (so the offline share and the window rules apply). A line whose
    session already exists, whose date has passed, or whose department or doctor is switched off is
    skipped and reported, so running it twice makes nothing new. One transaction: all or nothing."""
    if week_start.weekday() != 0:
        raise InvalidInput("请选择一周的星期一", code="week_start_not_monday")
    result = _make_from_templates(hospital=hospital, dates=[week_start + dt.timedelta(days=i) for i in range(7)])
    log.info(
        "week made from templates",
        extra={"hospital_id": hospital.id, "week_start": week_start.isoformat(),
               "sessions_made": len(result.created), "lines_skipped": len(result.skipped), "staff": staff_username},
    )
    return result


@transaction.atomic
def add_slots(*, session: Session, count: int, staff_username: str, now: dt.datetime) -> list[Slot]:
    """加号: `count` more numbers at the end of an open session, in its last time window, free at
    once (patients see them with the next read: counts come from the slot rows). Each carries who
    added it and when; the session's online capacity grows by `count`. Concurrent additions queue
    on the session row (FOR NO KEY UPDATE, which bookings' shared lock does not wait for), so
    sequence numbers never collide; a session suspended or over is refused."""
    if not 1 <= count <= MAX_EXTRA_SLOTS:
        raise InvalidInput(f"加号数量须为 1–{MAX_EXTRA_SLOTS}", code="extra_slot_count_invalid")
    row = (
        Session.objects.select_for_update(no_key=True)
        .filter(id=session.id)
        .values("status", "ends_at", "starts_at")
        .first()
    )
    if row is None:
        raise NotFound("排班不存在", code="session_not_found")
    if row["status"] != Session.Status.OPEN:
        raise Conflict("该排班已停诊，不能加号", code="session_suspended")
    if row["ends_at"] <= now:
        raise Conflict("该排班已结束，不能加号", code="session_over")
    last = Slot.objects.filter(session_id=session.id).order_by("-window_start", "-seq").first()
    if last is not None:
        window = (last.window_start, last.window_end)
    else:
        window = (max(row["starts_at"], row["ends_at"] - dt.timedelta(minutes=MAX_WINDOW_MINUTES)), row["ends_at"])
    top = Slot.objects.filter(session_id=session.id).aggregate(top=Max("seq"))["top"] or 0
    slots = Slot.objects.bulk_create(
        Slot(
            session_id=session.id,
            seq=top + i,
            window_start=window[0],
            window_end=window[1],
            added_by=staff_username[:150],
            added_at=now,
        )
        for i in range(1, count + 1)
    )
    Session.objects.filter(id=session.id).update(capacity=F("capacity") + count)
    session.refresh_from_db(fields=["capacity"])
    return slots


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
    registrations and notifications can tell the patients ("因{reason}停诊"). Suspending twice
    changes nothing."""
    reason = reason.strip()
    if not reason:
        raise InvalidInput("请填写停诊原因", code="suspend_reason_required")
    # FOR UPDATE waits for the bookings that read "open" under their shared lock (see
    # lock_session_status), so the suspension's time comes after every registration they record.
    Session.objects.select_for_update().filter(id=session.id).values_list("id", flat=True).first()
    changed = Session.objects.filter(id=session.id, status=Session.Status.OPEN).update(
        status=Session.Status.SUSPENDED, suspend_reason=reason[:100], suspended_at=clock.now(), settling_since=None
    )
    if changed:
        outbox.emit("session.suspended", session_id=session.id, reason=reason[:100])
    session.refresh_from_db(fields=["status", "suspend_reason", "suspended_at", "settling_since"])
    return session


def start_settling_suspension(*, session_id: int, now: dt.datetime) -> bool:
    """Mark a suspended session as being settled (its bookings cancelled and refunded): from then
    on 恢复出诊 is refused. True when the session is still suspended, so the caller may go on;
    False when it was resumed first (a compare-and-set on the row decides between the two)."""
    with transaction.atomic():
        Session.objects.filter(
            id=session_id, status=Session.Status.SUSPENDED, settling_since__isnull=True
        ).update(settling_since=now)
        return Session.objects.filter(id=session_id, status=Session.Status.SUSPENDED).exists()


def lock_session_for_status_change(session_id: int) -> dict | None:
    """Take the session row FOR UPDATE (what 停诊 and its undo take before changing the status, so
    every booking write holding the shared lock of `lock_session_status` finishes first) and
    return its status fields. Must run inside a transaction."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("lock_session_for_status_change must run inside a transaction")
    return (
        Session.objects.select_for_update()
        .filter(id=session_id)
        .values("status", "suspended_at", "settling_since", "ends_at")
        .first()
    )


def reopen_session(*, session_id: int, suspended_at: dt.datetime) -> bool:
    """The write of 恢复出诊: suspended → open, only while no settling has started and the
    suspension is the one the caller checked (compare-and-set on the row). Call it inside the
    transaction that took `lock_session_for_status_change`; booking decides whether anything of the
    suspension has been settled (booking.services.resume_session)."""
    return bool(
        Session.objects.filter(
            id=session_id,
            status=Session.Status.SUSPENDED,
            settling_since__isnull=True,
            suspended_at=suspended_at,
        ).update(status=Session.Status.OPEN, suspend_reason="", suspended_at=None)
    )


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
