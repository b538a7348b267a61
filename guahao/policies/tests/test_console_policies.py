"""Bans and the 爽约与退号规则 in the console: a ban is added and lifted (with a reason) by the
security administrator, both audited; one policy per hospital, edited by the system administrator."""

from __future__ import annotations

import datetime as dt

import pytest

from guahao import clock
from guahao.console import roles
from guahao.console.models import AuditEntry
from guahao.console.testing import console_client, make_staff
from guahao.patients.idcard import identity_index, parse_id_number
from guahao.policies.models import Policy, Restriction
from guahao.policies.selectors import active_restriction
from guahao.policies.services import restrict_patient
from guahao.testing import make_hospital, make_id_number

RESTRICTIONS = "/admin/policies/restriction/"


@pytest.fixture
def hospital(db):
    return make_hospital()


@pytest.fixture
def security(hospital):
    return make_staff(role=roles.SECURITY_ADMIN, hospitals=[hospital])


def _index(id_number: str) -> str:
    return identity_index(parse_id_number(id_number))


def test_a_ban_is_added_with_who_and_why_and_audited(hospital, security):
    id_number = make_id_number()
    until = clock.today() + dt.timedelta(days=30)

    answer = console_client(security).post(
        f"{RESTRICTIONS}add/",
        {"hospital": hospital.pk, "id_type": "resident", "id_number": id_number, "reason": "多次爽约", "until": until.isoformat()},
    )

    assert answer.status_code == 302, answer.content.decode()
    ban = Restriction.objects.get()
    assert (ban.reason, ban.until, ban.created_by) == ("多次爽约", until, security.username)
    assert active_restriction(hospital=hospital, patient_index=_index(id_number), today=clock.today()) == ban
    (audit,) = AuditEntry.objects.filter(action=AuditEntry.Action.BAN)
    assert audit.staff_username == security.username and audit.object_id == str(ban.pk)
    assert id_number not in str(audit.after) + audit.detail  # the document is never kept
    listing = console_client(security).get(RESTRICTIONS).content.decode()
    assert "多次爽约" in listing and security.username in listing and "生效中" in listing


def test_a_ban_ending_in_the_past_is_refused(hospital, security):
    page = console_client(security).post(
        f"{RESTRICTIONS}add/",
        {"hospital": hospital.pk, "id_type": "resident", "id_number": make_id_number(), "reason": "多次爽约",
         "until": (clock.today() - dt.timedelta(days=1)).isoformat()},
    )
    assert page.status_code == 200 and "不能早于今天" in page.content.decode()
    assert not Restriction.objects.exists()


def test_lifting_a_ban_needs_a_reason_and_is_audited(hospital, security):
    id_number = make_id_number()
    ban = restrict_patient(hospital=hospital, id_type="resident", id_number=id_number, reason="多次爽约",
                           until=clock.today() + dt.timedelta(days=30))
    client = console_client(security)

    empty = client.post(f"{RESTRICTIONS}{ban.pk}/lift/", {"reason": " "})
    assert empty.status_code == 200
    ban.refresh_from_db()
    assert ban.lifted_at is None

    answer = client.post(f"{RESTRICTIONS}{ban.pk}/lift/", {"reason": "核实为医院原因"})

    assert answer.status_code == 302
    ban.refresh_from_db()
    assert ban.lifted_at is not None
    assert (ban.lifted_by, ban.lift_reason) == (security.username, "核实为医院原因")
    assert active_restriction(hospital=hospital, patient_index=_index(id_number), today=clock.today()) is None
    (audit,) = AuditEntry.objects.filter(action=AuditEntry.Action.LIFT_BAN)
    assert audit.detail == "解除原因：核实为医院原因"
    assert "核实为医院原因" in client.get(RESTRICTIONS, {"state": "lifted"}).content.decode()
    # Lifting again changes nothing.
    client.post(f"{RESTRICTIONS}{ban.pk}/lift/", {"reason": "再次"})
    assert AuditEntry.objects.filter(action=AuditEntry.Action.LIFT_BAN).count() == 1


def test_another_hospitals_ban_is_out_of_reach(hospital, security):
    other = make_hospital()
    theirs = restrict_patient(hospital=other, id_type="resident", id_number=make_id_number(), reason="别家限制",
                              until=clock.today() + dt.timedelta(days=3))
    client = console_client(security)
    assert "别家限制" not in client.get(RESTRICTIONS).content.decode()
    assert client.post(f"{RESTRICTIONS}{theirs.pk}/lift/", {"reason": "x"}).status_code == 404
    theirs.refresh_from_db()
    assert theirs.lifted_at is None


def test_operations_staff_see_bans_but_cannot_lift_them(hospital):
    ban = restrict_patient(hospital=hospital, id_type="resident", id_number=make_id_number(), reason="多次爽约",
                           until=clock.today() + dt.timedelta(days=3))
    client = console_client(make_staff(role=roles.OPERATIONS, hospitals=[hospital]))
    assert client.get(RESTRICTIONS).status_code == 200
    assert client.post(f"{RESTRICTIONS}{ban.pk}/lift/", {"reason": "x"}).status_code == 403
    ban.refresh_from_db()
    assert ban.lifted_at is None


def test_each_hospital_has_one_policy_edited_by_the_system_administrator(hospital, security):
    other = make_hospital()
    sysadmin = make_staff(role=roles.SYSTEM_ADMIN, hospitals=[hospital])
    client = console_client(sysadmin)

    listing = client.get("/admin/policies/policy/")

    assert listing.status_code == 200
    policy = Policy.objects.get(hospital=hospital)
    assert not Policy.objects.filter(hospital=other).exists()  # made for the staff's hospitals only
    assert (policy.no_show_limit, policy.no_show_ban_days) == (3, 90)
    client.get("/admin/policies/policy/")
    assert Policy.objects.filter(hospital=hospital).count() == 1

    fields = {
        "no_show_limit": 2, "no_show_window_days": 90, "no_show_ban_days": 60, "no_show_grace_minutes": 30,
        "cancel_limit": 3, "cancel_window_days": 30, "cancel_ban_days": 30,
        "max_per_day": 3, "max_per_department_per_day": 1,
    }
    answer = client.post(f"/admin/policies/policy/{policy.pk}/change/", fields)
    assert answer.status_code == 302
    policy.refresh_from_db()
    assert (policy.no_show_limit, policy.no_show_ban_days) == (2, 60)
    audit = AuditEntry.objects.filter(action=AuditEntry.Action.CHANGE).latest("id")
    assert audit.after == {"no_show_limit": 2, "no_show_ban_days": 60}

    viewer = console_client(security)
    assert viewer.get(f"/admin/policies/policy/{policy.pk}/change/").status_code == 200
    assert viewer.post(f"/admin/policies/policy/{policy.pk}/change/", {**fields, "no_show_limit": 9}).status_code == 403
    policy.refresh_from_db()
    assert policy.no_show_limit == 2
