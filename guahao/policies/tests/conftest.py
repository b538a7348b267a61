"""A small hospital for the policy rules: four departments of 内科 with sessions on any day, and
real-name patients whose ID (and so their sex and birth date) the test chooses."""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass

import pytest

from guahao import clock
from guahao.booking import services
from guahao.booking.models import Hold
from guahao.booking.tests.conftest import ready_to_book, registered
from guahao.catalog.models import Department, Hospital
from guahao.patients import services as patients
from guahao.patients.models import Account, Patient
from guahao.scheduling.models import Session
from guahao.testing import (
    id_number_with_check,
    make_account,
    make_department,
    make_hospital,
    make_session,
)

__all__ = ["registered"]


@dataclass
class Clinic:
    hospital: Hospital
    departments: list[Department]  # 心血管内科, 呼吸内科, 消化内科, 内分泌科


@pytest.fixture
def clinic(db) -> Clinic:
    hospital = make_hospital()
    internal = make_department(hospital, name="内科")
    names = ("心血管内科", "呼吸内科", "消化内科", "内分泌科")
    return Clinic(hospital, [make_department(hospital, name=n, parent=internal) for n in names])


def session_on(department: Department, *, days_ahead: int = 1, start: dt.time = dt.time(8, 0)) -> Session:
    """A session of four numbers `days_ahead` days after the clock's today."""
    return make_session(department, day=clock.today() + dt.timedelta(days=days_ahead), slots=4, start=start)


_serial = itertools.count(101)


def id_number(*, birth: dt.date = dt.date(1990, 3, 7), male: bool = True) -> str:
    """A valid resident ID of a person born on `birth`; its 17th digit gives the sex (odd: male)."""
    serial = next(_serial) % 500 * 2 + (1 if male else 0)
    return id_number_with_check(f"110105{birth:%Y%m%d}{serial:03d}")


@pytest.fixture
def booker(clinic) -> tuple[Account, Patient]:
    account = make_account()
    return account, ready_to_book(account, clinic.hospital)


def add_same_person(hospital: Hospital, patient: Patient, *, relation: str = "parent") -> tuple[Account, Patient]:
    """A new account adds the same real person as a family member, through the real-name flow."""
    account = make_account()
    ready_to_book(account, hospital, name="王小明")  # its own 本人, and the notices read
    record = patients.add_patient(
        account=account,
        name=patient.name,
        id_type=patient.id_type,
        id_number=patient.id_number,
        phone="13766667777",
        relation=relation,
        client_ip="10.1.1.1",
    )
    assert record.pk != patient.pk and record.id_index == patient.id_index
    return account, record


def confirm(account: Account, patient: Patient, session: Session, *, seq: int = 1) -> Hold:
    """Hold the session's number `seq` and choose `patient` for it (the step the rules guard)."""
    hold = services.hold_slot(account=account, slot_id=session.slots.get(seq=seq).id)
    return services.confirm_hold(account=account, hold_id=hold.id, patient_id=patient.id, channel="wechat", insurance=False)
