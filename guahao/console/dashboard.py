"""Reads for the console's home page (工作台): today's registrations, money and error rates, and how
fast the latest release was taken, over the staff member's hospitals only.

Every figure is one aggregate query (a handful in all, whatever the number of rows); "today" is the
hospital's calendar day (Asia/Shanghai), and money is integer fen until the template shows it."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Count, IntegerField, Q, QuerySet, Sum
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast, Coalesce

from guahao import clock
from guahao.booking.models import Hold, Registration
from guahao.booking.states import (
    ACTIVE_REGISTRATION_STATES,
    LIVE_HOLD_STATES,
    HoldState,
    RegistrationStatus,
)
from guahao.catalog.models import Department
from guahao.console.display import yuan
from guahao.console.selectors import hospital_ids_of
from guahao.notifications.models import OutboxEvent
from guahao.payments.models import Payment, Refund
from guahao.scheduling.models import ReleaseRule, Slot

# Outbox jobs that call the HIS: the registration itself, the cancel, and the release of a dead
# hold's lock (the tidy-up after a hold ended).
HIS_TOPICS = ("hold.registering", "hold.released", "hold.expired", "hold.failed")
HIS_TOPIC_PREFIX = "his."


def _scoped(queryset: QuerySet, hospital_path: str, ids: set[int] | None) -> QuerySet:
    return queryset if ids is None else queryset.filter(**{f"{hospital_path}__in": ids})


def _rate(part: int, whole: int) -> float | None:
    return round(100 * part / whole, 1) if whole else None


def today_bounds(now: dt.datetime | None = None) -> tuple[dt.date, dt.datetime, dt.datetime]:
    """Today's date and its [start, end) in UTC-aware datetimes."""
    day = clock.local(now or clock.now()).date()
    start = clock.at_local(day, dt.time(0, 0))
    return day, start, clock.at_local(day + dt.timedelta(days=1), dt.time(0, 0))


# --- registrations --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RegistrationFigures:
    booked: int  # registrations made today (booked_at today), whatever their visit day
    visits: int  # registrations for today's sessions that still stand (not cancelled)
    attended: int  # of those, checked in or visited
    cancelled: int  # cancelled today (cancelled_at today), refund done or under way
    no_shows: int  # today's sessions' registrations marked 爽约


def registration_figures(ids: set[int] | None, now: dt.datetime | None = None) -> RegistrationFigures:
    day, start, end = today_bounds(now)
    booked_q = Q(booked_at__gte=start, booked_at__lt=end)
    visit_q = Q(session__date=day)
    cancelled_q = Q(cancelled_at__gte=start, cancelled_at__lt=end)
    qs = _scoped(Registration.objects.all(), "session__hospital_id", ids).filter(booked_q | visit_q | cancelled_q)
    row = qs.aggregate(
        booked=Count("id", filter=booked_q),
        visits=Count("id", filter=visit_q & Q(status__in=ACTIVE_REGISTRATION_STATES)),
        attended=Count(
            "id", filter=visit_q & Q(status__in=(RegistrationStatus.CHECKED_IN, RegistrationStatus.VISITED))
        ),
        cancelled=Count(
            "id", filter=cancelled_q & Q(status__in=(RegistrationStatus.REFUNDING, RegistrationStatus.CANCELLED))
        ),
        no_shows=Count("id", filter=visit_q & Q(status=RegistrationStatus.NO_SHOW)),
    )
    return RegistrationFigures(**row)


# --- money and payment errors ---------------------------------------------------------------------


@dataclass(frozen=True)
class MoneyFigures:
    paid_fen: int  # paid today (paid_at today)
    refunded_fen: int  # refunds completed today (by the provider or marked as refunded offline)
    payments_created: int  # payment orders opened today
    payments_paid: int  # of those, paid
    payments_closed: int  # of those, closed unpaid (abandoned, expired or refused)
    refunds_created: int  # refunds started today
    refunds_failed: int  # of those, failed at the provider
    refunds_failed_open: int  # failed refunds of any day still waiting for staff

    @property
    def revenue_fen(self) -> int:
        """今日实收: paid today minus refunded today (cash basis: a refund counts on the day it
        completes, whatever day its payment was made)."""
        return self.paid_fen - self.refunded_fen

    @property
    def revenue_yuan(self) -> str:
        return yuan(self.revenue_fen)

    @property
    def paid_yuan(self) -> str:
        return yuan(self.paid_fen)

    @property
    def refunded_yuan(self) -> str:
        return yuan(self.refunded_fen)

    @property
    def closed_rate(self) -> float | None:
        return _rate(self.payments_closed, self.payments_created)

    @property
    def refund_failed_rate(self) -> float | None:
        return _rate(self.refunds_failed, self.refunds_created)


def money_figures(ids: set[int] | None, now: dt.datetime | None = None) -> MoneyFigures:
    _day, start, end = today_bounds(now)
    paid_q = Q(paid_at__gte=start, paid_at__lt=end)
    created_q = Q(created_at__gte=start, created_at__lt=end)
    payments = _scoped(Payment.objects.all(), "hold__session__hospital_id", ids).filter(paid_q | created_q)
    p = payments.aggregate(
        paid_fen=Coalesce(Sum("amount_fen", filter=paid_q), 0),
        created=Count("id", filter=created_q),
        paid=Count("id", filter=created_q & Q(state=Payment.State.PAID)),
        closed=Count("id", filter=created_q & Q(state=Payment.State.CLOSED, paid_at__isnull=True)),
    )
    done_q = Q(state__in=(Refund.State.SUCCEEDED, Refund.State.MANUAL), succeeded_at__gte=start, succeeded_at__lt=end)
    failed_q = Q(state=Refund.State.FAILED)
    refunds = _scoped(Refund.objects.all(), "payment__hold__session__hospital_id", ids).filter(
        done_q | created_q | failed_q
    )
    r = refunds.aggregate(
        refunded_fen=Coalesce(Sum("amount_fen", filter=done_q), 0),
        created=Count("id", filter=created_q),
        failed=Count("id", filter=created_q & failed_q),
        failed_open=Count("id", filter=failed_q),
    )
    return MoneyFigures(
        paid_fen=p["paid_fen"],
        refunded_fen=r["refunded_fen"],
        payments_created=p["created"],
        payments_paid=p["paid"],
        payments_closed=p["closed"],
        refunds_created=r["created"],
        refunds_failed=r["failed"],
        refunds_failed_open=r["failed_open"],
    )


# --- holds and the HIS ----------------------------------------------------------------------------


@dataclass(frozen=True)
class HisFigures:
    holds_succeeded: int  # holds that became a registration today
    holds_failed: int  # holds that ended FAILED today: paid, then the HIS refused (refunded)
    jobs: int  # HIS jobs in the outbox created today
    jobs_retried: int  # of those, tried more than once (the HIS did not answer or refused)
    jobs_failing: int  # HIS jobs of any day that failed and are still waiting for a retry

    @property
    def hold_failed_rate(self) -> float | None:
        return _rate(self.holds_failed, self.holds_succeeded + self.holds_failed)

    @property
    def job_retried_rate(self) -> float | None:
        return _rate(self.jobs_retried, self.jobs)


def his_figures(ids: set[int] | None, now: dt.datetime | None = None) -> HisFigures:
    _day, start, end = today_bounds(now)
    ended_today = Q(updated_at__gte=start, updated_at__lt=end)
    holds = _scoped(Hold.objects.all(), "session__hospital_id", ids).filter(
        ended_today, state__in=(HoldState.SUCCEEDED, HoldState.FAILED)
    )
    h = holds.aggregate(
        succeeded=Count("id", filter=Q(state=HoldState.SUCCEEDED)),
        failed=Count("id", filter=Q(state=HoldState.FAILED)),
    )
    created_q = Q(created_at__gte=start, created_at__lt=end)
    failing_q = Q(processed_at__isnull=True, attempts__gt=0)
    events = OutboxEvent.objects.filter(Q(topic__startswith=HIS_TOPIC_PREFIX) | Q(topic__in=HIS_TOPICS))
    events = events.filter(created_q | failing_q)
    if ids is not None:
        # Events carry no hospital: every HIS job names its hold, and the hold its hospital.
        hold_ids = Hold.objects.filter(session__hospital_id__in=ids).values("id")
        events = events.annotate(hold_ref=Cast(KeyTextTransform("hold_id", "payload"), IntegerField())).filter(
            hold_ref__in=hold_ids
        )
    e = events.aggregate(
        jobs=Count("id", filter=created_q),
        retried=Count("id", filter=created_q & Q(attempts__gt=0)),
        failing=Count("id", filter=failing_q),
    )
    return HisFigures(
        holds_succeeded=h["succeeded"],
        holds_failed=h["failed"],
        jobs=e["jobs"],
        jobs_retried=e["retried"],
        jobs_failing=e["failing"],
    )


# --- how fast the latest release was taken --------------------------------------------------------


@dataclass
class DepartmentRelease:
    department_id: int
    name: str
    hospital_id: int
    released_at: dt.datetime
    visit_date: dt.date
    online: int  # numbers released online (not kept for walk-ins, not added later by staff)
    taken: int = 0  # of those, held or registered now
    half_minutes: float | None = None  # minutes from release until half the numbers were taken
    all_minutes: float | None = None  # … until all of them were

    @property
    def taken_percent(self) -> int:
        return round(100 * self.taken / self.online) if self.online else 0

    @property
    def half_text(self) -> str:
        return "未过半" if self.half_minutes is None else _fmt_minutes(self.half_minutes)

    @property
    def all_text(self) -> str:
        return "未约满" if self.all_minutes is None else _fmt_minutes(self.all_minutes)

    @property
    def released_text(self) -> str:
        local = clock.local(self.released_at)
        return f"{local.month}月{local.day}日 {local:%H:%M}"


def _rule_of(department_id: int, hospital_id: int, rules: dict, parents: dict[int, int | None]) -> ReleaseRule:
    """A department's own rule, else its nearest ancestor's, else the hospital default (as
    scheduling applies them), else the model's documented defaults."""
    node: int | None = department_id
    while node is not None:
        if (hospital_id, node) in rules:
            return rules[(hospital_id, node)]
        node = parents.get(node)
    return rules.get((hospital_id, None)) or ReleaseRule(hospital_id=hospital_id)


def latest_release_moment(rule: ReleaseRule, now: dt.datetime) -> tuple[dt.datetime, dt.date]:
    """The latest release moment at or before `now` under `rule`, and the visit date it released.

    Sessions on date D are released at the rule's release time on D − window_days (see
    scheduling.selectors.released_at), once a day. So the latest release is today at the release
    time if that has passed, else yesterday's; it released the sessions of that day + window_days.
    """
    local = clock.local(now)
    day = local.date() if local.time() >= rule.release_time else local.date() - dt.timedelta(days=1)
    return clock.at_local(day, rule.release_time), day + dt.timedelta(days=rule.window_days)


def _minutes(moment: dt.datetime, since: dt.datetime) -> float:
    return round(max((moment - since).total_seconds(), 0) / 60, 1)


def release_speed(ids: set[int] | None, now: dt.datetime | None = None) -> list[DepartmentRelease]:
    """Per department, how fast the numbers of its latest release went: the minutes from the
    release moment (see `latest_release_moment`; each department under its own release rule)
    until half and until all of its online numbers were taken. A number counts as taken by its
    hold that is live or succeeded (a hold that ended otherwise gave the number back); the k-th
    such hold by creation time marks the moment k numbers were gone. Four queries in all."""
    now = now or clock.now()
    rules = {
        (r.hospital_id, r.department_id): r for r in _scoped(ReleaseRule.objects.all(), "hospital_id", ids)
    }
    departments = {
        d["id"]: d
        for d in _scoped(Department.objects.all(), "hospital_id", ids).values("id", "parent_id", "name", "hospital_id")
    }
    parents = {pk: d["parent_id"] for pk, d in departments.items()}
    releases: dict[int, tuple[dt.datetime, dt.date]] = {
        pk: latest_release_moment(_rule_of(pk, d["hospital_id"], rules, parents), now) for pk, d in departments.items()
    }
    dates = {visit for _moment, visit in releases.values()}
    if not dates:
        return []

    online_slots = _scoped(Slot.objects.all(), "session__hospital_id", ids).filter(session__date__in=dates).exclude(
        Q(state=Slot.State.OFFLINE) | Q(his_code=Slot.OFFLINE_CODE) | Q(added_at__isnull=False)
    )
    counts = online_slots.values("session__department_id", "session__date").annotate(n=Count("id")).order_by()
    result: dict[int, DepartmentRelease] = {}
    for row in counts:
        pk = row["session__department_id"]
        moment, visit = releases[pk]
        if row["session__date"] != visit:
            continue
        d = departments[pk]
        result[pk] = DepartmentRelease(
            department_id=pk, name=d["name"], hospital_id=d["hospital_id"], released_at=moment, visit_date=visit,
            online=row["n"],
        )
    if not result:
        return []

    holds = (
        Hold.objects.filter(
            session__department_id__in=list(result),
            session__date__in=dates,
            slot__in=online_slots,
            state__in=(HoldState.SUCCEEDED, *LIVE_HOLD_STATES),
        )
        .order_by("created_at", "id")
        .values_list("session__department_id", "session__date", "created_at")
    )
    for pk, visit, created_at in holds:
        item = result[pk]
        if visit != item.visit_date:
            continue
        item.taken += 1
        if item.taken == math.ceil(item.online / 2):
            item.half_minutes = _minutes(created_at, item.released_at)
        if item.taken == item.online:
            item.all_minutes = _minutes(created_at, item.released_at)
    return sorted(result.values(), key=_speed_order)


def _speed_order(item: DepartmentRelease) -> tuple:
    # Fastest first: the departments patients race for lead the chart.
    return (
        item.all_minutes is None,
        item.all_minutes or 0,
        item.half_minutes is None,
        item.half_minutes or 0,
        -item.taken_percent,
        item.name,
    )


# --- the chart ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChartBar:
    label: str
    y: int
    text_y: int
    half_width: int
    all_width: int
    all_x: int  # where the full bar's label starts
    caption: str

    @property
    def label_x(self) -> int:
        return LABEL_WIDTH - 8


@dataclass(frozen=True)
class ReleaseChart:
    """A horizontal bar chart drawn as server-side SVG (attributes only: no script, no style)."""

    bars: list[ChartBar]
    width: int
    height: int
    label_width: int
    plot_width: int
    scale_minutes: float
    ticks: list[tuple[int, str]] = field(default_factory=list)


CHART_WIDTH = 720
LABEL_WIDTH = 150
CAPTION_WIDTH = 130
ROW_HEIGHT = 28
TOP = 24


def release_chart(items: list[DepartmentRelease], *, show_hospital: dict[int, str] | None = None) -> ReleaseChart:
    """Lay out one row per department: a light bar to the 50% moment over a dark bar to the 100%
    moment, in minutes since release; a department not (yet) half taken shows its share only."""
    plot = CHART_WIDTH - LABEL_WIDTH - CAPTION_WIDTH
    longest = max([i.all_minutes or i.half_minutes or 0 for i in items] + [1.0])
    scale = _nice_ceiling(longest)

    def width(minutes: float | None) -> int:
        # A number taken within the first seconds still shows as a sliver.
        return 0 if minutes is None else max(round(plot * minutes / scale), 2)

    bars = []
    for n, item in enumerate(items):
        y = TOP + n * ROW_HEIGHT
        half, full = width(item.half_minutes), width(item.all_minutes)
        label = item.name if not show_hospital else f"{item.name}·{show_hospital.get(item.hospital_id, '')}"
        bars.append(
            ChartBar(
                label=label if len(label) <= 12 else f"{label[:11]}…",
                y=y + 4,
                text_y=y + 18,
                half_width=half,
                all_width=full,
                all_x=LABEL_WIDTH + max(half, full) + 6,
                caption=_short_caption(item),
            )
        )
    ticks = [(LABEL_WIDTH + round(plot * k / 4), _fmt_minutes(scale * k / 4)) for k in range(5)]
    return ReleaseChart(
        bars=bars,
        width=CHART_WIDTH,
        height=TOP + ROW_HEIGHT * len(items) + 8,
        label_width=LABEL_WIDTH,
        plot_width=plot,
        scale_minutes=scale,
        ticks=ticks,
    )


def _nice_ceiling(minutes: float) -> float:
    for step in (1, 2, 5, 10, 15, 30, 60, 120, 240, 480, 720, 1440, 2880, 10080):
        if minutes <= step:
            return float(step)
    return float(math.ceil(minutes / 1440) * 1440)


def _fmt_minutes(minutes: float) -> str:
    if minutes >= 120:
        return f"{round(minutes / 60, 1):g} 小时"
    return f"{round(minutes, 1):g} 分钟"


def _short_caption(item: DepartmentRelease) -> str:
    if item.all_minutes is not None:
        return f"{_fmt_minutes(item.all_minutes)}约满"
    if item.half_minutes is not None:
        return f"{_fmt_minutes(item.half_minutes)}过半"
    return f"已约 {item.taken_percent}%"


# --- the page -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dashboard:
    today: dt.date
    registrations: RegistrationFigures | None
    money: MoneyFigures | None
    his: HisFigures | None
    releases: list[DepartmentRelease] | None
    chart: ReleaseChart | None

    @property
    def is_empty(self) -> bool:
        return self.registrations is None and self.money is None and self.his is None and self.releases is None


def dashboard_for(user: AbstractBaseUser, now: dt.datetime | None = None) -> Dashboard:
    """The home page's figures this staff member may see (each block needs the view permission of
    the rows it counts), over their hospitals only."""
    now = now or clock.now()
    ids = hospital_ids_of(user)
    see_registrations = user.has_perm("booking.view_registration")
    see_money = user.has_perm("payments.view_payment")
    see_holds = user.has_perm("booking.view_hold")
    see_release = user.has_perm("scheduling.view_session") or see_holds
    releases = release_speed(ids, now) if see_release else None
    chart = None
    if releases:
        hospitals = {r.hospital_id for r in releases}
        names = None
        if len(hospitals) > 1:
            from guahao.catalog.models import Hospital

            rows = Hospital.objects.filter(id__in=hospitals).values_list("id", "short_name", "name")
            names = {pk: short or name for pk, short, name in rows}
        chart = release_chart(releases, show_hospital=names)
    return Dashboard(
        today=clock.local(now).date(),
        registrations=registration_figures(ids, now) if see_registrations else None,
        money=money_figures(ids, now) if see_money else None,
        his=his_figures(ids, now) if see_holds else None,
        releases=releases,
        chart=chart,
    )
