"""The console's home page: today's figures over the staff member's hospitals, the latest release's
speed, and the pages grouped into work areas."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from guahao import clock
from guahao.booking import services as booking
from guahao.booking.models import Hold, Registration
from guahao.booking.states import HoldState, RegistrationStatus
from guahao.catalog.models import Hospital, Notice, NoticeAck
from guahao.console import roles
from guahao.console.dashboard import (
    dashboard_for,
    latest_release_moment,
    money_figures,
    registration_figures,
    release_speed,
)
from guahao.console.site import WORK_AREAS
from guahao.console.testing import console_client, make_staff, superuser_client
from guahao.notifications.services import emit
from guahao.patients.models import Account, Patient
from guahao.scheduling.models import ReleaseRule, Session
from guahao.testing import (
    make_account,
    make_department,
    make_hospital,
    make_patient,
    make_session,
    pay_at_provider,
    run_worker,
)

pytestmark = pytest.mark.django_db

# The world's "today": a fixed date and morning (the tests run under clock.frozen_at), so today's
# sessions are still bookable and cancellable, and a run crossing midnight sees the same day.
TODAY = dt.date(2030, 1, 7)
MORNING = clock.at_local(TODAY, dt.time(6, 0))


def patient_of(hospital: Hospital) -> tuple[Account, Patient]:
    account = make_account()
    for notice in Notice.objects.filter(hospital=hospital, is_active=True):
        NoticeAck.objects.get_or_create(
            notice=notice, account=account, defaults={"acked_at": clock.now()}
        )
    return account, make_patient(account, name="张三丰")


def register(session: Session, seq: int) -> Registration:
    """A registration made through the real flow: hold, confirm, pay, the worker settles."""
    account, patient = patient_of(session.hospital)
    hold = booking.hold_slot(account=account, slot_id=session.slots.get(seq=seq).id)
    booking.confirm_hold(
        account=account, hold_id=hold.id, patient_id=patient.id, channel="wechat", insurance=False
    )
    payment, _ = booking.pay_hold(account=account, hold_id=hold.id)
    pay_at_provider(payment.out_trade_no)
    run_worker()
    return Registration.objects.get(hold=hold)


def build_day(hospital: Hospital) -> dict[str, Registration]:
    """Today at this hospital: one registration stands, one was cancelled and refunded, one was a
    no-show — all three booked and paid today for today's 09:00 session (25 元 each)."""
    session = make_session(
        make_department(hospital, name="心血管内科"), day=TODAY, start=dt.time(9, 0), fee_fen=2500
    )
    booked, cancelled, no_show = (register(session, seq) for seq in (1, 2, 3))
    booking.cancel_registration(account=cancelled.account, registration_id=cancelled.id)
    run_worker()
    # Attendance is reported by the HIS after the session; here it is set directly.
    Registration.objects.filter(pk=no_show.pk).update(status=RegistrationStatus.NO_SHOW)
    return {"booked": booked, "cancelled": cancelled, "no_show": no_show}


@pytest.fixture
def two_hospitals():
    with clock.frozen_at(MORNING):
        a, b = make_hospital(name="甲医院"), make_hospital(name="乙医院")
        build_day(a)
        build_day(b)
        yield a, b


def test_todays_figures_count_bookings_visits_cancellations_no_shows_and_revenue(two_hospitals):
    a, _b = two_hospitals
    assert Registration.objects.get(session__hospital=a, status=RegistrationStatus.CANCELLED)
    regs = registration_figures({a.id})
    assert (regs.booked, regs.visits, regs.cancelled, regs.no_shows) == (3, 2, 1, 1)
    money = money_figures({a.id})
    assert (money.paid_fen, money.refunded_fen, money.revenue_fen) == (7500, 2500, 5000)
    assert money.revenue_yuan == "50.00 元"
    assert (money.payments_created, money.payments_paid, money.payments_closed) == (3, 3, 0)
    assert (money.refunds_created, money.refunds_failed) == (1, 0)


def test_another_hospitals_rows_are_never_counted(two_hospitals):
    a, b = two_hospitals
    staff = make_staff(role=roles.FINANCE, hospitals=[a])
    figures = dashboard_for(staff)
    assert figures.registrations.booked == 3
    assert figures.money.revenue_fen == 5000
    everything = registration_figures(None)
    assert everything.booked == 6
    html = console_client(staff).get("/admin/").content.decode()
    assert "50.00 元" in html
    assert "100.00 元" not in html  # both hospitals together


def test_the_page_shows_the_figures_in_yuan_under_a_bounded_number_of_queries(
    two_hospitals, django_assert_max_num_queries
):
    a, _b = two_hospitals
    staff = make_staff(role=(roles.FINANCE, roles.OPERATIONS), hospitals=[a])
    client = console_client(staff)
    client.get("/admin/")  # warm the session and content types
    with django_assert_max_num_queries(24):
        response = client.get("/admin/")
    html = response.content.decode()
    assert response.status_code == 200
    for text in (
        "今日新增挂号",
        "今日取消",
        "今日爽约",
        "今日实收（元）",
        "50.00 元",
        "未支付关闭率",
        "今日挂号失败",
    ):
        assert text in html, text
    with django_assert_max_num_queries(12):  # constant: independent of the number of rows
        dashboard_for(staff)


def test_the_dashboard_shows_only_what_the_role_may_see(two_hospitals):
    a, _b = two_hospitals
    operations = dashboard_for(make_staff(role=roles.OPERATIONS, hospitals=[a]))
    assert operations.registrations is not None and operations.money is None
    auditor = make_staff(role=roles.AUDITOR, hospitals=[a])
    assert dashboard_for(auditor).is_empty
    html = console_client(auditor).get("/admin/").content.decode()
    assert "今日实收" not in html and "审计日志" in html


def test_a_hold_that_failed_at_the_his_and_retried_his_jobs_are_counted(two_hospitals):
    a, b = two_hospitals
    with clock.frozen_at(MORNING + dt.timedelta(hours=1)):
        hold = Hold.objects.filter(session__hospital=a).first()
        failed = Hold.objects.create(
            account=hold.account,
            slot=hold.session.slots.get(seq=4),
            session=hold.session,
            state=HoldState.FAILED,
            expires_at=clock.now(),
            fee_fen=2500,
            created_at=clock.now(),
            updated_at=clock.now(),
        )
        job = emit("his.cancel", hold_id=failed.id, registration_no="R1")
        type(job).objects.filter(pk=job.pk).update(attempts=2, last_error="HisTimeout")
        other = Hold.objects.filter(session__hospital=b).first()
        emit("his.cancel", hold_id=other.id, registration_no="R2")
        figures = dashboard_for(make_staff(role=roles.OPERATIONS, hospitals=[a])).his
    assert (figures.holds_failed, figures.holds_succeeded) == (1, 3)
    assert figures.hold_failed_rate == 25.0
    assert figures.jobs_failing == 1
    assert figures.jobs_retried >= 1


# --- the latest release ---------------------------------------------------------------------------


def test_the_latest_release_is_todays_once_its_time_has_passed_else_yesterdays():
    rule = ReleaseRule(release_time=dt.time(8, 0), window_days=7)
    day = dt.date(2026, 3, 10)
    moment, visit = latest_release_moment(rule, clock.at_local(day, dt.time(9, 0)))
    assert (moment, visit) == (clock.at_local(day, dt.time(8, 0)), dt.date(2026, 3, 17))
    moment, visit = latest_release_moment(rule, clock.at_local(day, dt.time(7, 59)))
    assert (moment, visit) == (
        clock.at_local(day - dt.timedelta(days=1), dt.time(8, 0)),
        dt.date(2026, 3, 16),
    )


def hold_at(session: Session, seq: int, moment: dt.datetime, state: str = HoldState.HELD) -> Hold:
    return Hold.objects.create(
        account=make_account(),
        slot=session.slots.get(seq=seq),
        session=session,
        state=state,
        expires_at=moment + dt.timedelta(minutes=10),
        fee_fen=1000,
        created_at=moment,
        updated_at=moment,
    )


def test_release_speed_is_the_minutes_until_half_and_all_numbers_were_taken():
    hospital = make_hospital(name="丙医院")
    ReleaseRule.objects.filter(hospital=hospital).update(release_time=dt.time(7, 0), window_days=7)
    now = clock.at_local(TODAY, dt.time(10, 0))
    released = clock.at_local(TODAY, dt.time(7, 0))
    visit = TODAY + dt.timedelta(days=7)
    fast = make_session(make_department(hospital, name="儿科"), day=visit, slots=4)
    slow = make_session(make_department(hospital, name="皮肤科"), day=visit, slots=4)
    # Yesterday's release.
    earlier = make_session(fast.department, day=visit - dt.timedelta(days=1), slots=2)
    for seq, minutes in ((1, 1), (2, 2), (3, 3), (4, 5)):
        hold_at(fast, seq, released + dt.timedelta(minutes=minutes), HoldState.SUCCEEDED)
    hold_at(slow, 1, released + dt.timedelta(minutes=10))
    hold_at(slow, 2, released + dt.timedelta(minutes=30))
    hold_at(slow, 3, released + dt.timedelta(minutes=40), HoldState.EXPIRED)  # gave its number back
    hold_at(earlier, 1, released)

    items = {i.name: i for i in release_speed({hospital.id}, now)}
    assert set(items) == {"儿科", "皮肤科"}
    assert (items["儿科"].half_minutes, items["儿科"].all_minutes, items["儿科"].online) == (
        2.0,
        5.0,
        4,
    )
    assert (items["皮肤科"].half_minutes, items["皮肤科"].all_minutes, items["皮肤科"].taken) == (
        30.0,
        None,
        2,
    )
    assert release_speed({make_hospital().id}, now) == []


def test_release_speed_is_drawn_as_svg_without_inline_script_or_style():
    hospital = make_hospital(name="丁医院")
    staff = make_staff(role=roles.OPERATIONS, hospitals=[hospital])
    rule = ReleaseRule.objects.get(hospital=hospital, department=None)
    session = make_session(
        make_department(hospital, name="眼科"),
        day=clock.today() + dt.timedelta(days=rule.window_days),
        slots=2,
    )
    released, _visit = latest_release_moment(rule, clock.now())
    hold_at(session, 1, released + dt.timedelta(seconds=30), HoldState.SUCCEEDED)
    html = console_client(staff).get("/admin/").content.decode()
    chart = re.search(r"<svg class=\"release-chart\".*?</svg>", html, re.S).group(0)
    assert "眼科" in chart and "<rect" in chart
    assert (
        "<script" not in html.replace('<script src="', "")
        and " style=" not in html
        and "<style" not in html
    )


# --- the work areas -------------------------------------------------------------------------------


def test_the_pages_are_grouped_into_work_areas_and_none_is_lost(db):
    from django.contrib import admin

    client = superuser_client()
    response = client.get("/admin/")
    areas = response.context["app_list"]
    names = [a["name"] for a in areas]
    assert names[: len(WORK_AREAS)] == [name for _key, name, _members in WORK_AREAS]
    listed = {m["model"]._meta.label for a in areas for m in a["models"]}
    assert listed == {m._meta.label for m in admin.site._registry}
    orders = next(a for a in areas if a["name"] == "订单与患者")
    assert [m["object_name"] for m in orders["models"]][:2] == ["Registration", "Hold"]


def test_a_role_sees_only_its_pages_in_the_areas(db):
    hospital = make_hospital()
    client = console_client(make_staff(role=roles.OPERATIONS, hospitals=[hospital]))
    areas = client.get("/admin/").context["app_list"]
    listed = {m["model"]._meta.label for a in areas for m in a["models"]}
    assert "booking.Registration" in listed
    assert not listed & {"auth.User", "payments.Payment", "console.AuditEntry"}
    # An app's own page keeps Django's list of that app.
    assert client.get("/admin/booking/").status_code == 200
