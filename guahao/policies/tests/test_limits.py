"""The limits checked when a visiting patient is chosen for a hold: per person and visit date
(across every account that books them), per account, and who a department sees (age, sex). Each
refuses with a message naming its rule and stops refusing when it should."""

from __future__ import annotations

import datetime as dt

import pytest

from guahao import clock
from guahao.booking import services
from guahao.booking.models import Hold
from guahao.catalog.models import Notice, NoticeAck
from guahao.catalog.visitors import age_on, visitor_rule_defaults
from guahao.errors import Conflict, Forbidden
from guahao.patients.models import Account, Patient
from guahao.policies.models import Policy
from guahao.scheduling.models import ReleaseRule
from guahao.testing import make_account, make_department, make_patient

from .conftest import add_same_person, confirm, id_number, registered, session_on


def _choose(account: Account, hold: Hold, patient: Patient) -> Hold:
    return services.confirm_hold(account=account, hold_id=hold.id, patient_id=patient.id, channel="wechat", insurance=False)


def _hold(account: Account, session, *, seq: int = 1) -> Hold:
    return services.hold_slot(account=account, slot_id=session.slots.get(seq=seq).id)


# --- per person and visit date ----------------------------------------------------------------


def test_a_person_has_at_most_three_bookings_a_day_until_one_is_cancelled(clinic, booker):
    account, patient = booker
    # The account's own caps are another rule.
    ReleaseRule.objects.filter(hospital=clinic.hospital).update(max_live_holds_per_account=10)
    sessions = [session_on(d) for d in clinic.departments]
    first = registered(account, patient, sessions[0])
    registered(account, patient, sessions[1])
    confirm(account, patient, sessions[2])  # a live hold with the person chosen counts too
    fourth = _hold(account, sessions[3])

    with pytest.raises(Conflict) as refused:
        _choose(account, fourth, patient)

    assert refused.value.code == "patient_daily_limit"
    assert refused.value.message.startswith("同一就诊人每天最多预约3个号（每日挂号上限）")
    assert "取消其中一个后可再预约" in refused.value.message
    # Another day is another count.
    assert confirm(account, patient, session_on(clinic.departments[3], days_ahead=2)).patient_id == patient.id
    # A cancelled registration no longer counts.
    services.cancel_registration(account=account, registration_id=first.id)
    assert _choose(account, fourth, patient).patient_id == patient.id


def test_one_booking_per_department_a_day_until_the_first_is_released(clinic, booker):
    account, patient = booker
    department = clinic.departments[0]
    morning = session_on(department)
    afternoon = session_on(department, start=dt.time(14, 0))
    first = confirm(account, patient, morning)
    second = _hold(account, afternoon)

    with pytest.raises(Conflict) as refused:
        _choose(account, second, patient)

    assert refused.value.code == "patient_department_limit"
    assert refused.value.message.startswith("同一就诊人同一科室每天最多预约1个号（科室每日挂号上限）")
    assert "心血管内科" in refused.value.message
    # Another department the same day is fine, and so is the same department another day.
    services.release_hold(account=account, hold_id=second.id)
    assert confirm(account, patient, session_on(clinic.departments[1])).patient_id == patient.id
    services.release_hold(account=account, hold_id=Hold.objects.filter(account=account).latest("id").id)
    assert confirm(account, patient, session_on(department, days_ahead=2)).patient_id == patient.id
    # Released, the first no longer counts.
    services.release_hold(account=account, hold_id=first.id)
    assert confirm(account, patient, afternoon, seq=2).patient_id == patient.id


def test_the_daily_limits_follow_the_person_into_another_account(clinic, booker):
    account, patient = booker
    registered(account, patient, session_on(clinic.departments[0]))
    other_account, record = add_same_person(clinic.hospital, patient)
    hold = _hold(other_account, session_on(clinic.departments[0], start=dt.time(14, 0)))

    with pytest.raises(Conflict) as refused:
        _choose(other_account, hold, record)

    assert refused.value.code == "patient_department_limit"
    # Someone else of that account is not limited by it.
    assert _choose(other_account, hold, Patient.objects.get(account=other_account, relation="self")).state == "held"


def test_the_limits_are_the_hospitals_to_change(clinic, booker):
    account, patient = booker
    Policy.objects.create(hospital=clinic.hospital, max_per_department_per_day=2)
    department = clinic.departments[0]
    confirm(account, patient, session_on(department))

    assert confirm(account, patient, session_on(department, start=dt.time(14, 0))).patient_id == patient.id


# --- per account ------------------------------------------------------------------------------


def test_two_live_holds_per_account_say_when_the_first_runs_out(clinic, booker):
    account, _ = booker
    session = session_on(clinic.departments[0])
    first = _hold(account, session, seq=1)
    _hold(account, session, seq=2)

    with pytest.raises(Conflict) as refused:
        _hold(account, session, seq=3)

    assert refused.value.code == "live_hold_limit"
    assert refused.value.message.startswith("每个账号最多同时保留2个待支付的锁号（同时锁号上限）")
    assert f"最早的一个将于{clock.local(first.expires_at):%H:%M}到期释放" in refused.value.message
    # Once the first runs out, the account may hold again.
    with clock.frozen_at(first.expires_at + dt.timedelta(seconds=1)):
        assert _hold(account, session, seq=3).state == "held"


def test_ten_holds_a_day_per_account_until_the_next_day(clinic, booker):
    account, _ = booker
    assert ReleaseRule.objects.get(hospital=clinic.hospital).max_holds_per_day_per_account == 10
    session = session_on(clinic.departments[0], days_ahead=3)
    slot = session.slots.get(seq=1)
    with clock.frozen_at(clock.at_local(clock.today(), dt.time(9, 0))):
        for _ in range(10):
            hold = services.hold_slot(account=account, slot_id=slot.id)
            services.release_hold(account=account, hold_id=hold.id)

        with pytest.raises(Conflict) as refused:
            services.hold_slot(account=account, slot_id=slot.id)

        tomorrow = clock.today() + dt.timedelta(days=1)
        assert refused.value.code == "daily_hold_limit"
        assert refused.value.message == (
            f"每个账号每天最多锁号10次（每日锁号上限），今日已达上限，请于{tomorrow:%m月%d日} 0:00 后再试"
        )
        with clock.frozen_at(clock.at_local(tomorrow, dt.time(0, 1))):
            assert services.hold_slot(account=account, slot_id=slot.id).state == "held"


# --- who a department sees --------------------------------------------------------------------


def test_department_defaults_come_from_the_name():
    assert visitor_rule_defaults("儿科")["max_age"] == 14
    assert visitor_rule_defaults("新生儿科")["max_age"] == 14
    assert visitor_rule_defaults("妇科")["sex"] == "F"
    assert visitor_rule_defaults("产科")["sex"] == "F"
    assert visitor_rule_defaults("妇产科")["sex"] == "F"
    assert visitor_rule_defaults("心血管内科") == {"min_age": None, "max_age": None, "sex": ""}


def test_age_is_counted_in_full_years_on_the_visit_date():
    assert age_on(dt.date(2012, 5, 10), dt.date(2026, 5, 9)) == 13
    assert age_on(dt.date(2012, 5, 10), dt.date(2026, 5, 10)) == 14


def _acknowledge_notices(account: Account, hospital) -> None:
    for notice in Notice.objects.filter(hospital=hospital, is_active=True):
        NoticeAck.objects.create(notice=notice, account=account, acked_at=clock.now())


def _department(clinic, name: str, parent=None):
    department = make_department(clinic.hospital, name=name, parent=parent)
    for field, value in visitor_rule_defaults(name).items():
        setattr(department, field, value)
    department.save()
    return department


def test_paediatrics_sees_patients_under_14_on_the_visit_date(clinic):
    session = session_on(_department(clinic, "儿科"))
    account = make_account()
    fourteen_that_day = session.date.replace(year=session.date.year - 14)
    fourteen_next_day = fourteen_that_day + dt.timedelta(days=1)
    parent = make_patient(account, name="张大人", relation="self", id_number=id_number(birth=dt.date(1985, 1, 2)))
    teen = make_patient(account, name="张少年", relation="child", id_number=id_number(birth=fourteen_that_day))
    child = make_patient(account, name="张小童", relation="child", id_number=id_number(birth=fourteen_next_day))
    _acknowledge_notices(account, clinic.hospital)
    hold = _hold(account, session)

    for who in (parent, teen):
        with pytest.raises(Forbidden) as refused:
            _choose(account, hold, who)
        assert refused.value.code == "department_age_limit"
        assert refused.value.message.startswith("儿科仅接待14岁以下患者，按该就诊人的出生日期，就诊当天为")

    assert _choose(account, hold, child).patient_id == child.id


def test_gynaecology_and_its_sub_departments_see_women_only(clinic):
    obgyn = _department(clinic, "妇产科")
    prenatal = make_department(clinic.hospital, name="产前检查门诊", parent=obgyn)  # no limits of its own
    session = session_on(prenatal)
    account = make_account()
    husband = make_patient(account, name="李先生", relation="self", id_number=id_number(male=True))
    wife = make_patient(account, name="李女士", relation="spouse", id_number=id_number(male=False))
    _acknowledge_notices(account, clinic.hospital)
    hold = _hold(account, session)

    with pytest.raises(Forbidden) as refused:
        _choose(account, hold, husband)

    assert refused.value.code == "department_sex_limit"
    assert refused.value.message == "妇产科仅接待女性患者，该就诊人的性别不符，请选择其他科室"
    assert _choose(account, hold, wife).patient_id == wife.id


def test_a_department_made_in_the_console_gets_the_defaults_of_its_name(clinic):
    from guahao.catalog.models import Department
    from guahao.console import roles
    from guahao.console.testing import console_client, make_staff

    client = console_client(make_staff(role=roles.SYSTEM_ADMIN, hospitals=[clinic.hospital]))
    form = {"hospital": clinic.hospital.pk, "sort_order": 0, "is_active": "on", "min_age": "", "max_age": "", "sex": ""}

    assert client.post("/admin/catalog/department/add/", {**form, "code": "EK", "name": "儿科"}).status_code == 302
    assert client.post("/admin/catalog/department/add/", {**form, "code": "FK", "name": "妇科"}).status_code == 302
    chosen = {**form, "code": "EBK", "name": "小儿耳鼻喉科", "max_age": 18}
    assert client.post("/admin/catalog/department/add/", chosen).status_code == 302

    made = Department.objects.filter(hospital=clinic.hospital, code__in=["EK", "FK", "EBK"])
    limits = {name: (max_age, sex) for name, max_age, sex in made.values_list("name", "max_age", "sex")}
    assert limits == {"儿科": (14, ""), "妇科": (None, "F"), "小儿耳鼻喉科": (18, "")}
