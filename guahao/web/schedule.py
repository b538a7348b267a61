"""The date strip of a department or doctor, drawn from scheduling.selectors.availability: each
date says in words what a patient may do (有号(N), 约满, 停诊, "M月D日 07:00 放号"), never in colour
alone. Presentation only: which session is bookable is the selector's answer."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from guahao import clock
from guahao.scheduling.models import ReleaseRule, Session
from guahao.scheduling.selectors import (
    DayAvailability,
    SessionAvailability,
    SessionState,
    format_release_time,
)


@dataclass
class StripDay:
    date: dt.date
    weekday: str
    label: str
    state: str  # available / full / suspended / not_released / closed / none: a CSS hook besides the text
    sessions: list[SessionAvailability]
    selected: bool = False

    @property
    def iso(self) -> str:
        return self.date.isoformat()

    @property
    def short_date(self) -> str:
        return f"{self.date.month}月{self.date.day}日"


@dataclass
class Period:
    label: str
    sessions: list[SessionAvailability] = field(default_factory=list)


def _release_moment(day: dt.date, rule: ReleaseRule) -> dt.datetime:
    return clock.at_local(day - dt.timedelta(days=rule.window_days), rule.release_time)


def strip_days(calendar: list[DayAvailability], *, rule: ReleaseRule, now: dt.datetime) -> list[StripDay]:
    days = []
    for day in calendar:
        by_state: dict[str, list[SessionAvailability]] = {}
        for s in day.sessions:
            by_state.setdefault(s.status, []).append(s)
        if SessionState.AVAILABLE in by_state:
            left = sum(s.remaining for s in by_state[SessionState.AVAILABLE])
            label, state = f"有号({left})", SessionState.AVAILABLE.value
        elif SessionState.NOT_RELEASED in by_state:
            first = min(s.release_at for s in by_state[SessionState.NOT_RELEASED] if s.release_at)
            label, state = f"{format_release_time(first)} 放号", SessionState.NOT_RELEASED.value
        elif SessionState.FULL in by_state:
            label, state = "约满", SessionState.FULL.value
        elif SessionState.SUSPENDED in by_state:
            label, state = "停诊", SessionState.SUSPENDED.value
        elif SessionState.CLOSED in by_state:
            label, state = "已结束", SessionState.CLOSED.value
        elif now < _release_moment(day.date, rule):
            # No schedule published yet for a date still to be released: say when, never 无号.
            label = f"{format_release_time(_release_moment(day.date, rule))} 放号"
            state = SessionState.NOT_RELEASED.value
        else:
            label, state = "无排班", "none"
        days.append(StripDay(date=day.date, weekday=day.weekday, label=label, state=state, sessions=day.sessions))
    return days


def choose_day(days: list[StripDay], wanted: str) -> StripDay | None:
    """The date asked for, else the first with numbers left, else the first."""
    if not days:
        return None
    chosen = next((d for d in days if d.iso == wanted), None)
    chosen = chosen or next((d for d in days if d.state == SessionState.AVAILABLE), None) or days[0]
    chosen.selected = True
    return chosen


def periods_of(day: StripDay | None) -> list[Period]:
    """The chosen date's sessions, morning, afternoon and evening apart."""
    if day is None:
        return []
    periods = {value: Period(label=label) for value, label in Session.Period.choices}
    for s in day.sessions:
        periods[s.period].sessions.append(s)
    return [p for p in periods.values() if p.sessions]


def strip_length(rule: ReleaseRule, *, schedule_days: int) -> int:
    """Today, the booking window and the next date to be released (so a patient sees when it
    opens), within the days the hospital shows."""
    return max(1, min(rule.window_days + 2, schedule_days))
