from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from guahao import clock
from guahao.catalog.models import Department, Doctor, Hospital
from guahao.scheduling.models import ReleaseRule
from guahao.testing import make_department, make_doctor, make_hospital


@dataclass
class World:
    hospital: Hospital
    internal: Department  # 内科 (level 1)
    cardiology: Department  # 心血管内科 (level 2)
    doctor: Doctor


@pytest.fixture
def world(db) -> World:
    """A hospital releasing at 07:00, seven days ahead (the common rule), with 内科 → 心血管内科."""
    hospital = make_hospital()
    ReleaseRule.objects.filter(hospital=hospital, department=None).update(
        release_time=dt.time(7, 0), window_days=7
    )
    internal = make_department(hospital, name="内科")
    cardiology = make_department(hospital, name="心血管内科", parent=internal)
    return World(hospital, internal, cardiology, make_doctor(cardiology, name="陈建国"))


@pytest.fixture
def ten_am() -> Iterator[dt.datetime]:
    """Freeze the clock at 10:00 (Asia/Shanghai) today: morning sessions have started."""
    moment = clock.at_local(clock.today(), dt.time(10, 0))
    with clock.frozen_at(moment):
        yield moment


def day(offset: int) -> dt.date:
    return clock.today() + dt.timedelta(days=offset)
