from __future__ import annotations

from dataclasses import dataclass

import pytest

from guahao import clock
from guahao.catalog.models import Department, Doctor, Hospital, Notice, NoticeAck
from guahao.patients.models import Account, Patient
from guahao.scheduling.models import ReleaseRule, Session
from guahao.testing import (
    make_account,
    make_department,
    make_doctor,
    make_hospital,
    make_patient,
    make_session,
)


@dataclass
class World:
    hospital: Hospital
    department: Department
    doctor: Doctor
    session: Session


@pytest.fixture
def world(db) -> World:
    hospital = make_hospital()
    parent = make_department(hospital, name="内科")
    department = make_department(hospital, name="心血管内科", parent=parent)
    doctor = make_doctor(department, name="李建国")
    session = make_session(department, doctor=doctor, slots=4, fee_fen=2500)
    return World(hospital, department, doctor, session)


def ready_to_book(account: Account, hospital: Hospital, *, name: str = "张三丰") -> Patient:
    """An account that has a visiting patient and has acknowledged the hospital's notices."""
    patient = make_patient(account, name=name)
    for notice in Notice.objects.filter(hospital=hospital, is_active=True):
        NoticeAck.objects.get_or_create(notice=notice, account=account, defaults={"acked_at": clock.now()})
    return patient


@pytest.fixture
def booker(world) -> tuple[Account, Patient]:
    account = make_account()
    return account, ready_to_book(account, world.hospital)


def loosen_caps(hospital: Hospital) -> None:
    ReleaseRule.objects.filter(hospital=hospital).update(
        max_live_holds_per_account=1000, max_holds_per_day_per_account=30000
    )
