"""Reads for schedules: which release rule applies, whether a session can be booked now, and the
availability calendar patients browse. Booking uses `check_bookable`, `check_window_open` and
`bookable_slot_q`, so "can this be booked" and "is this slot free" are decided in one place."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from django.db import models
from django.db.models import (
    BooleanField,
    Case,
    Count,
    DateTimeField,
    ExpressionWrapper,
    F,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
    When,
)
from django.db.models.functions import Coalesce

from guahao import clock
from guahao.catalog.models import Department, Doctor
from guahao.catalog.selectors import DepartmentIndex, department_index
from guahao.errors import Conflict, InvalidInput, NotFound
from guahao.freshness import FreshCache
from guahao.scheduling.models import ReleaseRule, Session, Slot

WEEKDAYS = ("周一", "周二", "周三", "周四", "周五", "周六", "周日")


class SessionState(models.TextChoices):
    """What a patient sees on a session in the calendar (derived, never stored)."""

    AVAILABLE = "available", "有号"
    FULL = "full", "约满"
    SUSPENDED = "suspended", "停诊"
    NOT_RELEASED = "not_released", "未放号"
    CLOSED = "closed", "已结束"


# --- free slots -----------------------------------------------------------------------------------


def free_slot_q(now: dt.datetime) -> Q:
    """The one definition of a free slot, for Slot querysets: state free, or held by a hold whose
    lock has run out (so expiry needs no sweeper). Use it in the WHERE of the claiming UPDATE."""
    return Q(state=Slot.State.FREE) | Q(state=Slot.State.HELD, held_until__lte=now)


def booking_cutoff(rule: ReleaseRule, now: dt.datetime) -> dt.datetime:
    """Time windows that start at or before this moment take no more bookings: the rule's
    book_before_minutes from now, so a patient can still reach the clinic. A session that has
    started keeps taking bookings for its later windows."""
    return now + dt.timedelta(minutes=rule.book_before_minutes)


def bookable_slot_q(now: dt.datetime, cutoff: dt.datetime) -> Q:
    """A free slot whose time window still takes bookings (`cutoff` from `booking_cutoff`). Every
    condition is on the slot row itself (window_start never changes), so it belongs in the WHERE
    of the claiming UPDATE as a compare-and-set."""
    return free_slot_q(now) & Q(window_start__gt=cutoff)


def check_window_open(window_start: dt.datetime, *, rule: ReleaseRule, now: dt.datetime) -> None:
    """Raise Conflict (window_closed) when a time window has started or starts within the rule's
    book_before_minutes."""
    if window_start > booking_cutoff(rule, now):
        return
    local = clock.local(window_start)
    if window_start <= now:
        raise Conflict(f"{local:%H:%M} 开始的就诊时段已开始，不能再预约，请选择其他时段", code="window_closed")
    raise Conflict(
        f"{local:%H:%M} 开始的就诊时段已停止预约（时段开始前 {rule.book_before_minutes} 分钟截止），请选择其他时段",
        code="window_closed",
        book_before_minutes=rule.book_before_minutes,
    )


def _free_count(now: dt.datetime, cutoff: object = None) -> Coalesce:
    """Per-session free slot count as a subquery, for annotating a Session queryset; with `cutoff`
    (a datetime or an expression of the outer session row) only windows that still take bookings."""
    slots = Slot.objects.filter(session=OuterRef("pk"))
    if cutoff is not None:
        slots = slots.filter(window_start__gt=cutoff)
    free = (
        slots.filter(free_slot_q(now))
        .order_by()
        .values("session")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return Coalesce(Subquery(free, output_field=models.IntegerField()), 0)


def online_slots() -> QuerySet[Slot]:
    """Numbers offered online: all but those kept for the window (OFFLINE), which no count shown
    to patients or to staff as "号源" includes."""
    return Slot.objects.exclude(state=Slot.State.OFFLINE)


def _count_of(slots: QuerySet[Slot]) -> Coalesce:
    counted = slots.filter(session=OuterRef("pk")).order_by().values("session").annotate(n=Count("pk")).values("n")
    return Coalesce(Subquery(counted, output_field=models.IntegerField()), 0)


def with_slot_counts(sessions: QuerySet[Session], *, now: dt.datetime) -> QuerySet[Session]:
    """Annotate each session with `free` (free numbers now), `total` (numbers offered online) and
    `offline` (numbers kept for the window), in the same query: for lists such as the console's."""
    return sessions.annotate(
        free=_free_count(now),
        total=_count_of(online_slots()),
        offline=_count_of(Slot.objects.filter(state=Slot.State.OFFLINE)),
    )


# --- release rules --------------------------------------------------------------------------------


class _RuleBook:
    """A hospital's release rules; a department's own rule (or its nearest ancestor's) overrides the
    hospital default. Costs one query, plus one for the tree when departments have rules."""

    def __init__(self, hospital_id: int, index: DepartmentIndex | None = None) -> None:
        self.hospital_id = hospital_id
        self.by_department = {r.department_id: r for r in ReleaseRule.objects.filter(hospital_id=hospital_id)}
        self.has_department_rules = any(key is not None for key in self.by_department)
        self._index = index

    def for_department(self, department_id: int) -> ReleaseRule:
        if self.has_department_rules:
            if self._index is None:
                self._index = department_index(self.hospital_id)
            for node in self._index.ancestry(department_id):
                if node in self.by_department:
                    return self.by_department[node]
        default = self.by_department.get(None)
        # A hospital without a configured rule gets the model's documented defaults.
        return default if default is not None else ReleaseRule(hospital_id=self.hospital_id)


def release_rule_for(target: Session | Department) -> ReleaseRule:
    """The release rule for a session or department: the department's own rule, else the nearest
    ancestor's, else the hospital default."""
    department_id = target.department_id if isinstance(target, Session) else target.id
    return _RuleBook(target.hospital_id).for_department(department_id)


def released_at(session: Session, rule: ReleaseRule) -> dt.datetime:
    """A session on date D is released (放号) at the rule's release time, window_days before D."""
    return clock.at_local(session.date - dt.timedelta(days=rule.window_days), rule.release_time)


def _gate(
    session: Session,
    rule: ReleaseRule,
    now: dt.datetime,
    *,
    status: str | None = None,
    last_window_start: dt.datetime | None = None,
) -> tuple[SessionState | None, dt.datetime]:
    """Why a session cannot be booked at `now` (None: it can), and its release moment. `status`
    overrides the session object's, when the caller has just read it from the database. The
    session is closed once its last window no longer takes bookings (see `booking_cutoff`);
    without `last_window_start`, once its end is that close (each window is then checked by
    `check_window_open`)."""
    release = released_at(session, rule)
    if (status or session.status) == Session.Status.SUSPENDED:
        return SessionState.SUSPENDED, release
    if booking_cutoff(rule, now) >= (last_window_start or session.ends_at):
        return SessionState.CLOSED, release
    if now < release:
        return SessionState.NOT_RELEASED, release
    return None, release


def format_release_time(moment: dt.datetime) -> str:
    local = clock.local(moment)
    return f"{local.month}月{local.day}日 {local:%H:%M}"


def _visible_sessions() -> QuerySet[Session]:
    """Sessions patients may see: their hospital, department and doctor (if any) are active."""
    return Session.objects.filter(hospital__is_active=True, department__is_active=True).filter(
        Q(doctor__isnull=True) | Q(doctor__is_active=True)
    )


def get_session(session_id: int) -> Session:
    """A session patients may see (see `_visible_sessions`), with what its display needs loaded."""
    session = (
        _visible_sessions()
        .select_related("hospital", "department", "doctor", "registration_type")
        .filter(id=session_id)
        .first()
    )
    if session is None:
        raise NotFound("排班不存在或已停用", code="session_not_found")
    return session


_for_booking: FreshCache[tuple[Session, ReleaseRule]] = FreshCache()


def session_for_booking(session_id: int) -> tuple[Session, ReleaseRule]:
    """`get_session` and its release rule, reused within a process for FRESH_SECONDS: the hold path
    of a release burst asks for the same few sessions thousands of times a second. Read-only for
    the caller. A 停诊 newer than that is still seen by the claim (`lock_session_status`)."""

    def build(now: dt.datetime) -> tuple[Session, ReleaseRule]:
        session = get_session(session_id)
        return session, release_rule_for(session)

    return _for_booking.get(("booking", session_id), build).value


def check_bookable(
    session: Session, *, now: dt.datetime, status_is_fresh: bool = False, rule: ReleaseRule | None = None
) -> ReleaseRule:
    """Raise Conflict unless the session can be booked at `now`; return the release rule in force
    (lock minutes, caps, book_before_minutes) for the caller to apply. Codes: session_suspended,
    session_closed (its end is within book_before_minutes: no window can take bookings), not_released
    (detail release_at). `rule`: the session's release rule when the caller has it.
    The chosen window is the caller's to check (`check_window_open`), and slot freeness its
    conditional UPDATE's (`bookable_slot_q`). A session whose hospital, department or doctor has been
    switched off is NotFound (session_not_found), as it is to browsing. The status is read afresh,
    so a 停诊 made after the caller loaded the session still counts, unless the caller has just
    loaded it through `get_session` in this request (`status_is_fresh`: one query fewer on the
    hold path)."""
    if status_is_fresh:
        status = session.status
    else:
        status = _visible_sessions().filter(id=session.id).values_list("status", flat=True).first()
        if status is None:
            raise NotFound("排班不存在或已停用", code="session_not_found")
    rule = rule if rule is not None else release_rule_for(session)
    state, release = _gate(session, rule, now, status=status)
    if state == SessionState.SUSPENDED:
        raise Conflict("该时段已停诊，请选择其他日期或医生", code="session_suspended")
    if state == SessionState.CLOSED:
        raise Conflict("该出诊已结束或即将结束，不能再预约，请选择其他日期或医生", code="session_closed")
    if state == SessionState.NOT_RELEASED:
        raise Conflict(
            f"该号源将于 {format_release_time(release)} 开放预约",
            code="not_released",
            release_at=clock.local(release).isoformat(),
        )
    return rule


# --- availability -----------------------------------------------------------------------------


@dataclass(frozen=True)
class DoctorBrief:
    id: int
    name: str
    title: str
    title_label: str


@dataclass(frozen=True)
class DepartmentBrief:
    id: int
    name: str


@dataclass(frozen=True)
class SessionAvailability:
    id: int
    date: dt.date
    period: str
    period_label: str
    starts_at: dt.datetime
    ends_at: dt.datetime
    department: DepartmentBrief
    doctor: DoctorBrief | None
    registration_type: str
    fee_fen: int
    capacity: int
    remaining: int
    status: str
    status_label: str
    release_at: dt.datetime | None


@dataclass(frozen=True)
class DayAvailability:
    date: dt.date
    weekday: str
    has_slots: bool
    sessions: list[SessionAvailability]


def _describe(
    session: Session, rule: ReleaseRule, *, free: int, now: dt.datetime, last_window_start: dt.datetime | None
) -> SessionAvailability:
    """`free`: the free numbers in windows that still take bookings."""
    state, release = _gate(session, rule, now, last_window_start=last_window_start)
    if state is None:
        state = SessionState.AVAILABLE if free > 0 else SessionState.FULL
    doctor = session.doctor
    return SessionAvailability(
        id=session.id,
        date=session.date,
        period=session.period,
        period_label=Session.Period(session.period).label,
        starts_at=clock.local(session.starts_at),
        ends_at=clock.local(session.ends_at),
        department=DepartmentBrief(id=session.department.id, name=session.department.name),
        doctor=(
            DoctorBrief(id=doctor.id, name=doctor.name, title=doctor.title, title_label=doctor.get_title_display())
            if doctor is not None
            else None
        ),
        registration_type=session.registration_type.name,
        fee_fen=session.fee_fen,
        capacity=session.capacity,
        # Nothing is left to take in a suspended or finished session, whatever the slot rows say.
        remaining=0 if state in (SessionState.SUSPENDED, SessionState.CLOSED) else free,
        status=state.value,
        status_label=state.label,
        release_at=clock.local(release) if state == SessionState.NOT_RELEASED else None,
    )


def availability(
    *,
    department: Department | None = None,
    doctor: Doctor | None = None,
    days: int = 7,
    now: dt.datetime,
) -> list[DayAvailability]:
    """The calendar from today for `days` days (capped at the hospital's schedule_days): each date
    with its sessions and whether any has a number left. For a department, sessions of it and its
    sub-departments (a 心血管内科 shows its 高血压专病门诊 too). Four queries, whatever the size."""
    if (department is None) == (doctor is None):
        raise InvalidInput("请指定科室或医生之一", code="availability_target")
    owner = department if department is not None else doctor
    hospital = owner.hospital
    days = max(1, min(days, hospital.schedule_days))
    first = clock.local(now).date()
    dates = [first + dt.timedelta(days=i) for i in range(days)]

    index = department_index(hospital.id)
    sessions = Session.objects.filter(hospital=hospital, date__gte=dates[0], date__lte=dates[-1])
    if department is not None:
        sessions = sessions.filter(department_id__in=index.subtree(department.id)).filter(
            Q(doctor__isnull=True) | Q(doctor__is_active=True)
        )
    else:
        sessions = sessions.filter(doctor=doctor)
    sessions = (
        sessions.select_related("department", "doctor", "registration_type")
        # Department clinics (no doctor) first, then doctors in the hospital's order, on every DB.
        .order_by("date", "starts_at", "department__sort_order", F("doctor__sort_order").asc(nulls_first=True), "id")
    )
    rules = _RuleBook(hospital.id, index)
    candidates = index.subtree(department.id) if department is not None else [doctor.department_id]
    sessions = sessions.annotate(
        cutoff=_cutoff_by_department(rules, candidates, now), last_window_start=_last_window_start()
    ).annotate(free=_free_count(now, cutoff=OuterRef("cutoff")))
    by_date: dict[dt.date, list[SessionAvailability]] = {d: [] for d in dates}
    for session in sessions:
        rule = rules.for_department(session.department_id)
        by_date[session.date].append(
            _describe(session, rule, free=session.free, now=now, last_window_start=session.last_window_start)
        )
    return [
        DayAvailability(
            date=d,
            weekday=WEEKDAYS[d.weekday()],
            has_slots=any(s.status == SessionState.AVAILABLE for s in items),
            sessions=items,
        )
        for d, items in by_date.items()
    ]


def _last_window_start() -> Subquery:
    last = online_slots().filter(session=OuterRef("pk")).order_by("-window_start").values("window_start")[:1]
    return Subquery(last, output_field=DateTimeField())


def _cutoff_by_department(rules: _RuleBook, department_ids: Iterable[int], now: dt.datetime) -> Value | Case:
    """Each session's booking cutoff as an SQL value: departments may have rules of their own, so
    one CASE over the departments (one branch per distinct book_before_minutes) keeps it one query."""
    by_minutes: dict[int, list[int]] = {}
    for department_id in department_ids:
        minutes = rules.for_department(department_id).book_before_minutes
        by_minutes.setdefault(minutes, []).append(department_id)
    cutoffs = {minutes: now + dt.timedelta(minutes=minutes) for minutes in by_minutes}
    if len(cutoffs) == 1:
        return Value(next(iter(cutoffs.values())), output_field=DateTimeField())
    return Case(
        *(When(department_id__in=ids, then=Value(cutoffs[m])) for m, ids in by_minutes.items()),
        output_field=DateTimeField(),
    )


# --- slots of one session ---------------------------------------------------------------------


@dataclass(frozen=True)
class SlotWindow:
    window_start: dt.datetime
    window_end: dt.datetime
    total: int
    free: int  # 0 in a closed window, whatever its rows say
    slot_id: int | None  # a free slot to hold in this window, when the session can be booked
    closed: bool = False  # started, or starts within the rule's book_before_minutes


@dataclass(frozen=True)
class SessionSlots:
    session: SessionAvailability
    windows: list[SlotWindow]


def _group_windows(
    rows: Iterable[dict], *, bookable: bool, countable: bool, cutoff: dt.datetime
) -> list[SlotWindow]:
    windows: dict[tuple[dt.datetime, dt.datetime], dict] = {}
    for row in rows:
        key = (row["window_start"], row["window_end"])
        closed = row["window_start"] <= cutoff
        w = windows.setdefault(key, {"total": 0, "free": 0, "slot_id": None, "closed": closed})
        w["total"] += 1
        if row["is_free"] and countable and not closed:
            w["free"] += 1
            if bookable and w["slot_id"] is None:
                w["slot_id"] = row["id"]
    return [
        SlotWindow(window_start=clock.local(start), window_end=clock.local(end), **counts)
        for (start, end), counts in windows.items()
    ]


def slots_of(session: Session, *, now: dt.datetime) -> SessionSlots:
    """The session's time windows (分时段) with total and free online numbers in each (numbers kept
    for the window are left out); windows that have
    started or start within the rule's book_before_minutes are closed (free 0, no slot_id), and
    the session's remaining count leaves them out, as the calendar's does."""
    rows = list(
        online_slots()
        .filter(session=session)
        .annotate(is_free=ExpressionWrapper(free_slot_q(now), output_field=BooleanField()))
        .order_by("window_start", "seq")
        .values("id", "window_start", "window_end", "is_free")
    )
    rule = release_rule_for(session)
    cutoff = booking_cutoff(rule, now)
    free = sum(1 for r in rows if r["is_free"] and r["window_start"] > cutoff)
    last = max((r["window_start"] for r in rows), default=None)
    described = _describe(session, rule, free=free, now=now, last_window_start=last)
    windows = _group_windows(
        rows,
        bookable=described.status == SessionState.AVAILABLE,
        countable=described.status not in (SessionState.SUSPENDED, SessionState.CLOSED),
        cutoff=cutoff,
    )
    return SessionSlots(session=described, windows=windows)
