"""Registrations in the operator console: staff find them by number or personal data (their own
hospitals' only, masked, the search audited), reveal a patient's identity with the permission,
cancel and refund for the patient after the online deadline, record attendance, and export the list;
every act leaves an audit row."""

from __future__ import annotations

import datetime as dt
import io

import pytest
from django.test import Client
from openpyxl import load_workbook

from guahao import clock
from guahao.booking import services
from guahao.booking.models import Registration
from guahao.booking.states import RegistrationStatus
from guahao.catalog.models import Notice, NoticeAck
from guahao.console import roles
from guahao.console.models import AuditEntry
from guahao.console.testing import console_client, make_staff
from guahao.errors import Conflict
from guahao.notifications.messaging import messages_for
from guahao.payments.models import Refund
from guahao.testing import make_department, make_doctor, make_hospital, make_session, run_worker

from .conftest import registered

pytestmark = pytest.mark.django_db

LIST = "/admin/booking/registration/"


def page(reg: Registration, action: str = "change") -> str:
    return f"{LIST}{reg.pk}/{action}/"


@pytest.fixture
def ours(world, booker) -> Registration:
    account, patient = booker
    return registered(account, patient, world.session)


@pytest.fixture
def theirs(booker) -> Registration:
    """The same patient's registration at another hospital."""
    account, patient = booker
    hospital = make_hospital(name="另一家医院")
    session = make_session(make_department(hospital, name="骨科"), doctor=None, fee_fen=1500)
    make_doctor(session.department)
    for notice in Notice.objects.filter(hospital=hospital):
        NoticeAck.objects.get_or_create(notice=notice, account=account, defaults={"acked_at": clock.now()})
    return registered(account, patient, session)


def staff_client(world, role: str) -> tuple[Client, object]:
    user = make_staff(role=role, hospitals=[world.hospital])
    return console_client(user), user


def found(client: Client, term: str) -> list[int]:
    response = client.get(LIST, {"q": term})
    assert response.status_code == 200
    return [r.pk for r in response.context["cl"].result_list]


# --- finding a registration ---------------------------------------------------------------------


def test_search_by_number_phone_name_or_id_finds_only_the_staff_hospitals_rows(world, ours, theirs):
    client, _ = staff_client(world, roles.OPERATIONS)
    patient, account = ours.patient, ours.account

    assert found(client, ours.registration_no) == [ours.pk]
    assert found(client, theirs.registration_no) == []  # another hospital's number: nothing
    assert found(client, patient.id_number) == [ours.pk]
    assert found(client, patient.phone) == [ours.pk]
    assert found(client, account.phone) == [ours.pk]
    assert found(client, patient.name) == [ours.pk]
    assert found(client, "王小明") == []

    html = client.get(LIST, {"q": patient.id_number}).content.decode()  # the term is in its box
    for clear in (patient.name, patient.phone, account.phone):
        assert clear not in html
    html = client.get(LIST).content.decode()
    for clear in (patient.name, patient.phone, patient.id_number, account.phone):
        assert clear not in html
    assert "张*丰" in html


def test_a_search_by_full_id_number_or_phone_is_audited_without_the_term_in_clear(world, ours):
    client, user = staff_client(world, roles.OPERATIONS)
    patient = ours.patient

    found(client, patient.id_number)
    found(client, patient.phone)
    found(client, ours.registration_no)  # not personal data: not audited

    rows = list(AuditEntry.objects.filter(action=AuditEntry.Action.SEARCH_PII).order_by("id"))
    assert [(r.staff_username, r.after["kind"]) for r in rows] == [(user.username, "id"), (user.username, "phone")]
    for row in rows:
        text = f"{row.detail} {row.after} {row.object_repr}"
        assert patient.id_number not in text and patient.phone not in text
    assert rows[0].after["term"] == patient.id_number[0] + "*" * 16 + patient.id_number[-1]


def test_filters_offer_only_the_staff_hospitals_departments(world, ours, theirs):
    client, _ = staff_client(world, roles.OPERATIONS)
    response = client.get(LIST, {"visit_day": "tomorrow"})
    assert [r.pk for r in response.context["cl"].result_list] == [ours.pk]
    html = response.content.decode()
    assert "心血管内科" in html and "骨科" not in html
    department = client.get(LIST, {"session__department__id__exact": world.department.pk})
    assert [r.pk for r in department.context["cl"].result_list] == [ours.pk]


def test_staff_of_another_hospital_can_neither_open_nor_act_on_a_registration(world, ours, theirs):
    client, _ = staff_client(world, roles.OPERATIONS)

    assert client.get(page(theirs)).status_code == 302  # "not found": back to the index
    assert client.post(page(theirs, "reveal")).status_code == 404
    assert client.get(page(theirs, "cancel")).status_code == 404
    assert client.post(page(theirs, "cancel"), {"reason": "患者来电"}).status_code == 404
    assert client.post(page(theirs, "attendance"), {"status": "checked_in"}).status_code == 404
    theirs.refresh_from_db()
    assert theirs.status == RegistrationStatus.BOOKED
    assert not AuditEntry.objects.filter(action__in=["reveal", "cancel", "attendance"]).exists()


# --- revealing the patient's identity --------------------------------------------------------------


def test_reveal_shows_the_full_identity_once_and_is_audited(world, ours):
    client, user = staff_client(world, roles.OPERATIONS)
    patient = ours.patient

    change = client.get(page(ours)).content.decode()
    assert "显示完整信息" in change and patient.id_number not in change
    assert client.get(page(ours, "reveal")).status_code == 405  # a button, never a link

    response = client.post(page(ours, "reveal"))
    html = response.content.decode()
    assert response.status_code == 200
    assert patient.name in html and patient.id_number in html and patient.phone in html
    assert "no-store" in response["Cache-Control"]
    entry = AuditEntry.objects.get(action=AuditEntry.Action.REVEAL)
    assert (entry.staff_username, entry.result, entry.object_id) == (user.username, "success", str(ours.pk))
    assert entry.hospital_id == world.hospital.pk
    assert patient.id_number not in entry.detail


def test_reveal_without_the_permission_is_refused_and_audited(world, ours):
    client, user = staff_client(world, roles.FINANCE)  # 财务: no reveal_personal_data

    assert "显示完整信息" not in client.get(page(ours)).content.decode()
    response = client.post(page(ours, "reveal"))

    assert response.status_code == 403
    assert ours.patient.id_number not in response.content.decode()
    entry = AuditEntry.objects.get(action=AuditEntry.Action.REVEAL)
    assert (entry.staff_username, entry.result) == (user.username, AuditEntry.Result.DENIED)


def test_the_patient_page_reveals_too_and_links_to_the_patients_registrations(world, ours):
    client, _ = staff_client(world, roles.OPERATIONS)
    patient = ours.patient

    html = client.get(f"/admin/patients/patient/{patient.pk}/change/").content.decode()
    link = f"{LIST}?patient__id__exact={patient.pk}"
    assert link in html
    assert found_by_link(client, link) == [ours.pk]
    response = client.post(f"/admin/patients/patient/{patient.pk}/reveal/")
    assert response.status_code == 200 and patient.id_number in response.content.decode()
    assert AuditEntry.objects.filter(action="reveal", object_id=str(patient.pk), result="success").count() == 1


def found_by_link(client: Client, link: str) -> list[int]:
    response = client.get(link)
    assert response.status_code == 200
    return [r.pk for r in response.context["cl"].result_list]


def test_a_search_of_patients_by_full_phone_is_audited(world, ours):
    client, _ = staff_client(world, roles.OPERATIONS)
    response = client.get("/admin/patients/patient/", {"q": ours.patient.phone})
    assert [p.pk for p in response.context["cl"].result_list] == [ours.patient.pk]
    entry = AuditEntry.objects.get(action=AuditEntry.Action.SEARCH_PII)
    assert entry.after["kind"] == "phone" and ours.patient.phone not in str(entry.after)


# --- cancel and refund on the patient's behalf ---------------------------------------------------------


def test_staff_cancel_after_the_online_deadline_refunds_in_full(world, ours):
    deadline_passed = ours.slot.window_start - dt.timedelta(minutes=30) - clock.now()
    with clock.travel(deadline_passed):
        with pytest.raises(Conflict, match="已超过线上退号截止时间"):  # the patient can no longer
            services.cancel_registration(account=ours.account, registration_id=ours.id)
        client, user = staff_client(world, roles.OPERATIONS)

        confirm = client.get(page(ours, "cancel"))
        assert confirm.status_code == 200 and "已过，由员工决定是否办理" in confirm.content.decode()
        refused = client.post(page(ours, "cancel"), {"reason": "  "})
        assert refused.status_code == 200 and "请填写取消原因" in refused.content.decode()
        assert not AuditEntry.objects.filter(action="cancel").exists()

        response = client.post(page(ours, "cancel"), {"reason": "患者发热，来电要求退号"})
        assert response.status_code == 302
        run_worker()

    ours.refresh_from_db()
    payment = ours.hold.payment
    payment.refresh_from_db()
    refund = Refund.objects.get(payment=payment)
    assert ours.status == RegistrationStatus.CANCELLED
    assert ours.cancelled_by == user.username and ours.cancel_reason == "患者发热，来电要求退号"
    assert refund.refund_no == f"RF{payment.out_trade_no}" and refund.state == Refund.State.SUCCEEDED
    assert payment.refunded_fen == payment.amount_fen == 2500
    entry = AuditEntry.objects.get(action=AuditEntry.Action.CANCEL)
    assert (entry.staff_username, entry.result, entry.object_id) == (user.username, "success", str(ours.pk))
    assert entry.before == {"status": "booked"} and entry.after["status"] == "refunding"
    # What the patient reads.
    (message,) = messages_for("registration.refunding", {"registration_id": ours.id})
    assert message.text.startswith("医院已为您取消挂号（原因：患者发热，来电要求退号）。就诊人张*丰")
    assert message.text.endswith("的挂号已取消，挂号费将原路退回。")
    # ledger-check: clean (the autouse fixture asserts it after the test).


def test_a_cancel_the_state_does_not_allow_changes_nothing_and_is_audited_as_failed(world, ours):
    client, _ = staff_client(world, roles.OPERATIONS)
    client.post(page(ours, "attendance"), {"status": "checked_in"})

    response = client.post(page(ours, "cancel"), {"reason": "患者要求"})
    assert "不能取消" in response.content.decode()
    with pytest.raises(Conflict, match="已取号"):
        services.cancel_registration_by_staff(registration_id=ours.id, staff_username="x", reason="患者要求")
    ours.refresh_from_db()
    assert ours.status == RegistrationStatus.CHECKED_IN
    assert not Refund.objects.exists()


def test_without_the_permission_there_is_no_cancel(world, ours):
    user = make_staff(role=roles.SECURITY_ADMIN, hospitals=[world.hospital])
    client = console_client(user)
    assert client.post(page(ours, "cancel"), {"reason": "患者要求"}).status_code == 403
    ours.refresh_from_db()
    assert ours.status == RegistrationStatus.BOOKED


# --- attendance --------------------------------------------------------------------------------------


def test_staff_mark_checked_in_then_visited_each_audited(world, ours):
    client, user = staff_client(world, roles.OPERATIONS)

    client.post(page(ours, "attendance"), {"status": "checked_in"})
    ours.refresh_from_db()
    assert ours.status == RegistrationStatus.CHECKED_IN
    client.post(page(ours, "attendance"), {"status": "visited"})
    ours.refresh_from_db()
    assert ours.status == RegistrationStatus.VISITED

    refused = client.post(page(ours, "attendance"), {"status": "no_show"}, follow=True)
    assert "不能标记为“爽约”" in refused.content.decode()
    ours.refresh_from_db()
    assert ours.status == RegistrationStatus.VISITED
    rows = AuditEntry.objects.filter(action=AuditEntry.Action.ATTENDANCE).order_by("id")
    assert [(r.after["status"], r.result) for r in rows] == [
        ("checked_in", "success"),
        ("visited", "success"),
        ("no_show", "failure"),
    ]
    assert {r.staff_username for r in rows} == {user.username}


def test_a_no_show_is_marked_from_booked_and_finance_may_not_mark(world, ours):
    finance, _ = staff_client(world, roles.FINANCE)
    assert finance.post(page(ours, "attendance"), {"status": "no_show"}).status_code == 403
    client, _ = staff_client(world, roles.OPERATIONS)
    assert "标记为爽约" in client.get(page(ours)).content.decode()
    client.post(page(ours, "attendance"), {"status": "no_show"})
    ours.refresh_from_db()
    assert ours.status == RegistrationStatus.NO_SHOW


# --- export -------------------------------------------------------------------------------------------


def test_export_is_an_xlsx_of_the_filtered_list_with_masked_values_and_audited(world, ours, theirs):
    client, user = staff_client(world, roles.OPERATIONS)
    patient = ours.patient

    response = client.post(f"{LIST}export/?status__exact=booked&q={patient.phone}")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/vnd.openxmlformats")
    sheet = load_workbook(io.BytesIO(response.content)).active
    rows = list(sheet.iter_rows(values_only=True))
    assert rows[0][:4] == ("挂号单号", "状态", "就诊人", "证件号码")
    assert len(rows) == 2  # the other hospital's registration is not exported
    row = rows[1]
    assert row[0] == ours.registration_no and row[1] == "预约成功" and row[2] == "张*丰"
    assert row[10] == 25 and rows[0][10] == "挂号费（元）"
    cells = " ".join(str(c) for r in rows for c in r if c is not None)
    for clear in (patient.name, patient.phone, patient.id_number, ours.account.phone):
        assert clear not in cells
    entry = AuditEntry.objects.get(action=AuditEntry.Action.EXPORT)
    assert entry.staff_username == user.username and entry.after["rows"] == 1
    assert entry.after["filters"]["status__exact"] == "booked"
    assert patient.phone not in str(entry.after) and entry.after["filters"]["q"].count("*") == 4


def test_export_needs_its_permission(world, ours):
    user = make_staff(role=roles.AUDITOR, hospitals=[world.hospital])
    assert console_client(user).post(f"{LIST}export/").status_code == 403
    assert not AuditEntry.objects.filter(action="export").exists()


# --- the pages need no inline code (the console's content security policy) ---------------------------


def test_the_order_pages_need_no_inline_code(world, ours):
    from guahao.tests.test_http_hardening import assert_guarded_page

    client, _ = staff_client(world, roles.OPERATIONS)
    for url in (LIST, page(ours), page(ours, "cancel"), f"/admin/patients/patient/{ours.patient.pk}/change/"):
        assert_guarded_page(client.get(url))
    assert_guarded_page(client.post(page(ours, "reveal")))
    finance, _ = staff_client(world, roles.FINANCE)
    for url in ("/admin/payments/payment/", "/admin/payments/payment/ledger/", "/admin/payments/refund/"):
        assert_guarded_page(finance.get(url))
