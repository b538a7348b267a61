from __future__ import annotations

import datetime as dt

import pytest

from guahao import clock
from guahao.errors import Conflict
from guahao.scheduling import selectors
from guahao.scheduling.models import ReleaseRule
from guahao.testing import make_department, make_session

from .conftest import day


def _status(session, now: dt.datetime) -> selectors.SessionAvailability:
    calendar = selectors.availability(department=session.department, days=14, now=now)
    return next(s for d in calendar for s in d.sessions if s.id == session.id)


def test_a_session_eight_days_out_opens_at_seven_the_day_after(world, ten_am):
    session = make_session(world.cardiology, doctor=world.doctor, day=day(8))
    opens = clock.at_local(day(1), dt.time(7, 0))

    shown = _status(session, clock.now())
    assert shown.status == "not_released"
    assert shown.status_label == "未放号"
    assert shown.release_at == opens
    assert shown.release_at.utcoffset() == dt.timedelta(hours=8)
    with pytest.raises(Conflict) as err:
        selectors.check_bookable(session, now=clock.now())
    assert err.value.code == "not_released"
    assert f"该号源将于 {opens.month}月{opens.day}日 07:00 开放预约" == err.value.message
    assert err.value.detail["release_at"] == opens.isoformat()

    with clock.travel(opens - clock.now() - dt.timedelta(seconds=1)):
        assert _status(session, clock.now()).status == "not_released"
    with clock.travel(opens - clock.now()):
        assert _status(session, clock.now()).status == "available"
        rule = selectors.check_bookable(session, now=clock.now())
        assert rule.window_days == 7


def test_released_at_is_window_days_before_the_session_date(world):
    session = make_session(world.cardiology, day=dt.date(2026, 12, 3))
    rule = ReleaseRule(hospital=world.hospital, release_time=dt.time(7, 0), window_days=7)
    assert selectors.released_at(session, rule) == clock.at_local(dt.date(2026, 11, 26), dt.time(7, 0))
    assert selectors.format_release_time(selectors.released_at(session, rule)) == "11月26日 07:00"


def test_department_rule_overrides_the_hospital_rule_down_the_tree(world, ten_am):
    # 内科 books ten days ahead; its 心血管内科 inherits that; 外科 keeps the hospital's seven days.
    ReleaseRule.objects.create(hospital=world.hospital, department=world.internal, window_days=10)
    surgery = make_department(world.hospital, name="外科")
    cardio_session = make_session(world.cardiology, day=day(9))
    surgery_session = make_session(surgery, day=day(9))

    assert selectors.release_rule_for(cardio_session).window_days == 10
    assert selectors.release_rule_for(world.cardiology).window_days == 10
    assert selectors.release_rule_for(surgery_session).window_days == 7
    assert _status(cardio_session, clock.now()).status == "available"
    assert _status(surgery_session, clock.now()).status == "not_released"


def test_the_nearest_department_rule_wins(world):
    ReleaseRule.objects.create(hospital=world.hospital, department=world.internal, window_days=10)
    ReleaseRule.objects.create(
        hospital=world.hospital, department=world.cardiology, window_days=3, release_time=dt.time(8, 30)
    )
    rule = selectors.release_rule_for(make_session(world.cardiology))
    assert (rule.window_days, rule.release_time) == (3, dt.time(8, 30))
    assert selectors.release_rule_for(world.internal).window_days == 10


def test_a_hospital_without_rules_gets_the_documented_defaults(world):
    ReleaseRule.objects.filter(hospital=world.hospital).delete()
    rule = selectors.release_rule_for(world.cardiology)
    assert (rule.release_time, rule.window_days, rule.lock_minutes) == (dt.time(7, 0), 7, 10)
