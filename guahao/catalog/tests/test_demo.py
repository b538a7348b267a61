from __future__ import annotations

import datetime as dt
import io
from collections import Counter

import pytest
from django.core.management import call_command
from django.db.models import Count

from guahao import clock
from guahao.catalog.models import Department, Doctor, Hospital, Notice
from guahao.scheduling import selectors
from guahao.scheduling.models import ReleaseRule, Session, Slot

pytestmark = pytest.mark.django_db


def _counts() -> dict[str, int]:
    return {
        "hospitals": Hospital.objects.count(),
        "departments": Department.objects.count(),
        "doctors": Doctor.objects.count(),
        "notices": Notice.objects.count(),
        "rules": ReleaseRule.objects.count(),
        "sessions": Session.objects.count(),
        "slots": Slot.objects.count(),
        "booked": Slot.objects.filter(state=Slot.State.BOOKED).count(),
        "suspended": Session.objects.filter(status=Session.Status.SUSPENDED).count(),
    }


@pytest.fixture
def evening():
    """19:00 today: day sessions have ended, 07:00's release has happened."""
    with clock.frozen_at(clock.at_local(clock.today(), dt.time(19, 0))):
        yield


def test_demo_twice_changes_nothing_and_meets_the_minimums(evening):
    call_command("demo", stdout=io.StringIO())
    first = _counts()
    call_command("demo", stdout=io.StringIO())
    assert _counts() == first

    hospital = Hospital.objects.get(code="DEMO")
    assert (hospital.name, hospital.grade, hospital.browse_level) == ("示范市第一人民医院", "三级甲等", 2)
    levels = Counter(Department.objects.filter(hospital=hospital).values_list("level", flat=True))
    assert sum(levels.values()) >= 15 and levels[1] >= 5 and levels[2] >= 10 and levels[3] >= 1
    assert Doctor.objects.filter(hospital=hospital).count() >= 30
    assert set(Doctor.objects.values_list("title", flat=True)) == set(Doctor.Title.values)
    dates = set(Session.objects.filter(hospital=hospital).values_list("date", flat=True))
    assert dates == {clock.today() + dt.timedelta(days=i) for i in range(14)}
    assert {n.title for n in Notice.objects.filter(hospital=hospital)} == {"挂号须知", "防疫须知"}
    fees = set(Session.objects.filter(hospital=hospital).values_list("registration_type__name", "fee_fen"))
    assert {("普通号", 1000), ("专家号", 2500), ("专家号", 5000)} <= fees
    assert any(name == "特需号" and fee >= 10000 for name, fee in fees)
    assert set(Session.objects.values_list("period", flat=True)) == set(Session.Period.values)

    windows = Slot.objects.values_list("window_start", "window_end")
    assert max(end - start for start, end in windows) <= dt.timedelta(minutes=30)
    per_window = Slot.objects.values("session", "window_start").annotate(n=Count("id"))
    assert max(row["n"] for row in per_window) <= 4
    # Numbers taken offline carry the marker, and no hold: booking's invariants can tell them apart.
    assert set(Slot.objects.filter(state=Slot.State.BOOKED).values_list("his_code", flat=True)) == {
        Slot.OFFLINE_CODE
    }


def test_the_demo_calendar_shows_every_state(evening):
    call_command("demo", stdout=io.StringIO())
    hospital = Hospital.objects.get(code="DEMO")
    states: Counter[str] = Counter()
    for root in Department.objects.filter(hospital=hospital, level=1):
        for day in selectors.availability(department=root, days=14, now=clock.now()):
            states.update(s.status for s in day.sessions)
    assert set(states) == {"available", "full", "suspended", "not_released", "closed"}
    # Under the hospital's 7-day window (产科 has its own 14-day rule), days 8–13 are not yet open.
    cardiology = Department.objects.get(hospital=hospital, code="XXG")
    calendar = selectors.availability(department=cardiology, days=14, now=clock.now())
    for day in calendar[8:]:
        assert {s.status for s in day.sessions} <= {"not_released", "suspended"}
    obstetrics = Department.objects.get(hospital=hospital, code="CK")
    assert selectors.release_rule_for(obstetrics).window_days == 14


def test_running_the_demo_a_day_later_adds_only_the_new_day(evening):
    call_command("demo", stdout=io.StringIO())
    before = set(Session.objects.values_list("date", flat=True))
    count = Session.objects.count()
    with clock.travel(dt.timedelta(days=1)):
        call_command("demo", stdout=io.StringIO())
        new_day = clock.today() + dt.timedelta(days=13)
    added = Session.objects.count() - count
    assert set(Session.objects.values_list("date", flat=True)) - before == {new_day}
    assert added == Session.objects.filter(date=new_day).count() > 0
    doubles = (
        Session.objects.filter(doctor__isnull=False)
        .values("doctor", "date", "period")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
    )
    assert not doubles.exists()
