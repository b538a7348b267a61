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
        NoticeAck.objects.get_or_create(
            notice=notice, account=account, defaults={"acked_at": clock.now()}
        )
    return patient


@pytest.fixture
def booker(world) -> tuple[Account, Patient]:
    account = make_account()
    return account, ready_to_book(account, world.hospital)


def loosen_caps(hospital: Hospital) -> None:
    """Lift the per-account hold caps and the per-person daily limits (0: none), for scenarios that
    book one patient many times."""
    from guahao.policies.models import Policy

    ReleaseRule.objects.filter(hospital=hospital).update(
        max_live_holds_per_account=1000, max_holds_per_day_per_account=30000
    )
    Policy.objects.update_or_create(hospital=hospital, defaults={"max_per_day": 0, "max_per_department_per_day": 0})


@pytest.fixture
def simulated_his(monkeypatch):
    """An HIS with its own state that fails on demand (guahao.his.simulated), used by booking."""
    from guahao.his import services as his_services
    from guahao.his.simulated import SimulatedHis

    his = SimulatedHis()
    monkeypatch.setattr(his_services, "adapter", lambda: his)
    return his


def confirmed(world: World, account: Account, patient: Patient, *, seq: int = 1):
    """A live hold on the session's number `seq`, confirmed for `patient` (not yet paying)."""
    from guahao.booking import services

    slot = world.session.slots.get(seq=seq)
    hold = services.hold_slot(account=account, slot_id=slot.id)
    return services.confirm_hold(
        account=account, hold_id=hold.id, patient_id=patient.id, channel="wechat", insurance=False
    )


def paid(world: World, account: Account, patient: Patient, *, seq: int = 1):
    """A hold whose order the patient has paid at the provider, before any notification or worker
    pass: (hold, payment)."""
    from guahao.booking import services
    from guahao.testing import pay_at_provider

    hold = confirmed(world, account, patient, seq=seq)
    payment, _ = services.pay_hold(account=account, hold_id=hold.id)
    pay_at_provider(payment.out_trade_no)
    return hold, payment


@pytest.fixture(autouse=True)
def ledger_is_clean_after_each_scenario(request):
    """`guahao ledger-check` finds nothing after any booking scenario: every test here ends with
    the books in order (or says which finding it leaves on purpose)."""
    uses_db = request.node.get_closest_marker("django_db") or {"db", "transactional_db"} & set(
        request.fixturenames
    )
    if not uses_db:
        yield
        return
    request.getfixturevalue("_django_db_helper")  # set up before this check, torn down after it
    yield
    if request.node.get_closest_marker("leaves_ledger_finding") is None:
        from guahao.ledger import find_violations

        assert find_violations() == []


def press_pay_on_an_open_page(pay_url: str) -> tuple[int, str]:
    """The patient presses 确认支付 on a WeChat cashier page opened earlier (its form posts back to
    the H5 pay link), whatever the order's state now: (status, page)."""
    import urllib.error
    import urllib.parse
    import urllib.request

    assert "/cashier/wechat/" in pay_url, pay_url
    data = urllib.parse.urlencode({"action": "pay"}).encode()
    request = urllib.request.Request(
        pay_url.partition("&redirect_url=")[0], data=data, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310 (loopback sandbox)
            return answer.status, answer.read().decode("utf-8")
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read().decode("utf-8")


def registered(account: Account, patient: Patient, session: Session, *, seq: int = 1):
    """A registration (BOOKED) of `patient` on the session's number `seq`, made through hold,
    confirm, pay, the provider's notification and the worker."""
    from guahao.booking import services
    from guahao.booking.models import Registration
    from guahao.testing import pay_at_provider, run_worker

    hold = services.hold_slot(account=account, slot_id=session.slots.get(seq=seq).id)
    services.confirm_hold(
        account=account, hold_id=hold.id, patient_id=patient.id, channel="wechat", insurance=False
    )
    payment, _ = services.pay_hold(account=account, hold_id=hold.id)
    pay_at_provider(payment.out_trade_no)
    run_worker()
    return Registration.objects.get(hold=hold)
