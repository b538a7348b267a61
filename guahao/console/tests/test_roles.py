"""Role boundaries (三权分立) and hospital boundaries: each role reaches its own work only, and
staff of hospital A never see hospital B's rows, by list, search or a guessed URL."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import CommandError, call_command

from guahao.console import roles
from guahao.console.models import AuditEntry
from guahao.console.services import sync_roles
from guahao.console.testing import console_client, make_staff
from guahao.testing import make_department, make_hospital, make_session

pytestmark = pytest.mark.django_db


def test_the_five_roles_exist_with_the_permissions_of_the_table():
    sync_roles()
    sync_roles()  # twice changes nothing
    assert set(Group.objects.values_list("name", flat=True)) >= set(roles.ROLES)
    auditor = Group.objects.get(name=roles.AUDITOR)
    assert sorted(auditor.permissions.values_list("codename", flat=True)) == ["view_auditentry"]


@pytest.mark.parametrize(
    ("role", "path", "status"),
    [
        (roles.OPERATIONS, "/admin/console/auditentry/", 403),
        (roles.OPERATIONS, "/admin/auth/user/", 403),
        (roles.OPERATIONS, "/admin/auth/group/", 403),
        (roles.OPERATIONS, "/admin/booking/registration/", 200),
        (roles.FINANCE, "/admin/console/auditentry/", 403),
        (roles.FINANCE, "/admin/payments/refund/", 200),
        (roles.FINANCE, "/admin/scheduling/releaserule/", 403),
        (roles.AUDITOR, "/admin/console/auditentry/", 200),
        (roles.AUDITOR, "/admin/booking/registration/", 403),
        (roles.AUDITOR, "/admin/patients/patient/", 403),
        (roles.AUDITOR, "/admin/auth/user/", 403),
        (roles.SECURITY_ADMIN, "/admin/policies/restriction/", 200),
        (roles.SECURITY_ADMIN, "/admin/console/auditentry/", 403),
        (roles.SECURITY_ADMIN, "/admin/scheduling/releaserule/", 403),
        (roles.SYSTEM_ADMIN, "/admin/scheduling/releaserule/", 200),
        (roles.SYSTEM_ADMIN, "/admin/auth/user/", 200),
        (roles.SYSTEM_ADMIN, "/admin/console/auditentry/", 403),
        (roles.SYSTEM_ADMIN, "/admin/booking/registration/", 403),
    ],
)
def test_each_role_reaches_its_own_pages_only(role, path, status):
    staff = make_staff(role=role, hospitals=[make_hospital()])
    assert console_client(staff).get(path).status_code == status


def test_an_operator_cannot_change_roles_or_make_themself_an_administrator():
    hospital = make_hospital()
    staff = make_staff(role=roles.OPERATIONS, hospitals=[hospital])
    client = console_client(staff)
    answer = client.post(f"/admin/auth/user/{staff.pk}/change/", {"username": staff.username, "groups": [
        Group.objects.get(name=roles.SYSTEM_ADMIN).pk], "is_staff": "on", "is_active": "on"})
    assert answer.status_code == 403
    assert list(staff.groups.values_list("name", flat=True)) == [roles.OPERATIONS]


def test_staff_of_one_hospital_never_see_another_hospitals_rows():
    a, b = make_hospital(name="甲医院"), make_hospital(name="乙医院")
    session_b = make_session(make_department(b, name="乙院皮肤科"))
    admin_a = make_staff(role=roles.SYSTEM_ADMIN, hospitals=[a])
    client = console_client(admin_a)

    sessions = client.get("/admin/scheduling/session/").content.decode()
    assert "乙院皮肤科" not in sessions
    guessed = client.get(f"/admin/scheduling/session/{session_b.pk}/change/")
    assert guessed.status_code == 302  # "not found": the admin sends the staff member back
    assert "乙院皮肤科" not in client.get(guessed.url).content.decode()
    assert client.get(f"/admin/catalog/hospital/{b.pk}/change/").status_code == 302
    assert client.get(f"/admin/catalog/department/{session_b.department_id}/change/").status_code == 302
    # A department cannot be attached to the other hospital by posting its id either.
    answer = client.post("/admin/catalog/department/add/", {"hospital": b.pk, "code": "X1", "name": "偷渡科",
                                                           "sort_order": 0, "is_active": "on"})
    assert answer.status_code == 200 and "偷渡科" not in "".join(
        d.name for d in b.departments.all())


def test_staff_of_two_hospitals_see_both():
    a, b = make_hospital(), make_hospital()
    make_session(make_department(a, name="甲院眼科"))
    make_session(make_department(b, name="乙院眼科"))
    staff = make_staff(role=roles.OPERATIONS, hospitals=[a, b])
    page = console_client(staff).get("/admin/scheduling/session/").content.decode()
    assert "甲院眼科" in page and "乙院眼科" in page


def test_a_configuration_change_is_audited_with_before_and_after():
    hospital = make_hospital()
    admin = make_staff(role=roles.SYSTEM_ADMIN, hospitals=[hospital])
    rule = hospital.release_rules.get()
    client = console_client(admin)
    form = client.get(f"/admin/scheduling/releaserule/{rule.pk}/change/").context["adminform"].form
    data = {k: v for k, v in form.initial.items() if v is not None}
    data.update({"hospital": hospital.pk, "lock_minutes": 15, "release_time": "07:30:00", "department": ""})
    answer = client.post(f"/admin/scheduling/releaserule/{rule.pk}/change/", data)
    assert answer.status_code == 302, answer.content.decode()[:2000]
    entry = AuditEntry.objects.get(action=AuditEntry.Action.CHANGE)
    assert entry.staff_username == admin.username and entry.hospital_id == hospital.pk
    assert entry.before["lock_minutes"] == 10 and entry.after["lock_minutes"] == 15


def test_createstaff_makes_an_account_without_a_terminal(monkeypatch):
    hospital = make_hospital(code="H-CS")
    monkeypatch.setenv("GUAHAO_STAFF_PASSWORD", "Clinic#2026a")
    out = io.StringIO()
    call_command("createstaff", "li.finance", "--role", roles.FINANCE, "--hospital", "H-CS", stdout=out)
    user = get_user_model().objects.get(username="li.finance")
    assert user.is_staff and not user.is_superuser and user.check_password("Clinic#2026a")
    assert list(user.groups.values_list("name", flat=True)) == [roles.FINANCE]
    assert list(user.staff_profile.hospitals.all()) == [hospital]
    assert user.staff_profile.must_change_password
    assert "身份验证器密钥" in out.getvalue()


def test_createstaff_refuses_a_weak_password_or_none(monkeypatch):
    make_hospital(code="H-CS2")
    monkeypatch.delenv("GUAHAO_STAFF_PASSWORD", raising=False)
    with pytest.raises(CommandError, match="GUAHAO_STAFF_PASSWORD"):
        call_command("createstaff", "a", "--role", roles.FINANCE, "--hospital", "H-CS2")
    monkeypatch.setenv("GUAHAO_STAFF_PASSWORD", "password1")
    with pytest.raises(CommandError, match="符号"):
        call_command("createstaff", "a", "--role", roles.FINANCE, "--hospital", "H-CS2")
    with pytest.raises(CommandError):
        call_command("createstaff", "a", "--role", roles.FINANCE, "--hospital", "NOPE")
    assert not get_user_model().objects.filter(username="a").exists()


def test_createstaff_makes_the_setup_superuser_with_a_second_factor(monkeypatch):
    monkeypatch.setenv("GUAHAO_STAFF_PASSWORD", "Setup#2026pw")
    out = io.StringIO()
    call_command("createstaff", "setup", "--superuser", stdout=out)
    user = get_user_model().objects.get(username="setup")
    assert user.is_superuser and user.totpdevice_set.exists()
    assert "身份验证器密钥" in out.getvalue()
    with pytest.raises(CommandError, match="--role"):
        call_command("createstaff", "other")


def _user_form(client, user) -> dict:
    form = client.get(f"/admin/auth/user/{user.pk}/change/").context["adminform"].form
    data = {k: v for k, v in form.initial.items() if v is not None and k not in ("password", "last_login", "date_joined")}
    data["groups"] = [g.pk for g in user.groups.all()]
    data.update({"is_active": "on", "is_staff": "on"})
    prefix = "staff_profile"
    data.update({f"{prefix}-TOTAL_FORMS": "1", f"{prefix}-INITIAL_FORMS": "1", f"{prefix}-MIN_NUM_FORMS": "0",
                 f"{prefix}-MAX_NUM_FORMS": "1", f"{prefix}-0-id": user.staff_profile.pk,
                 f"{prefix}-0-user": user.pk,
                 f"{prefix}-0-hospitals": [h.pk for h in user.staff_profile.hospitals.all()]})
    return data


def test_an_administrator_cannot_grant_themself_a_role():
    hospital = make_hospital()
    admin = make_staff(role=roles.SYSTEM_ADMIN, hospitals=[hospital])
    client = console_client(admin)
    data = _user_form(client, admin)
    data["groups"] = [Group.objects.get(name=roles.AUDITOR).pk, Group.objects.get(name=roles.SYSTEM_ADMIN).pk]
    client.post(f"/admin/auth/user/{admin.pk}/change/", data)
    assert list(admin.groups.values_list("name", flat=True)) == [roles.SYSTEM_ADMIN]


def test_the_auditor_holds_no_other_role():
    hospital = make_hospital()
    admin = make_staff(role=roles.SYSTEM_ADMIN, hospitals=[hospital])
    other = make_staff(role=roles.OPERATIONS, hospitals=[hospital])
    client = console_client(admin)
    data = _user_form(client, other)
    data["groups"] = [Group.objects.get(name=roles.AUDITOR).pk, Group.objects.get(name=roles.OPERATIONS).pk]
    answer = client.post(f"/admin/auth/user/{other.pk}/change/", data)
    assert answer.status_code == 200 and "审计管理员不能兼任其他角色" in answer.content.decode()
    assert list(other.groups.values_list("name", flat=True)) == [roles.OPERATIONS]


def test_editing_a_colleague_keeps_their_other_hospitals():
    a, b = make_hospital(), make_hospital()
    admin = make_staff(role=roles.SYSTEM_ADMIN, hospitals=[a])
    shared = make_staff(role=roles.OPERATIONS, hospitals=[a, b])
    client = console_client(admin)
    data = _user_form(client, shared)
    data["staff_profile-0-hospitals"] = [a.pk]  # all the editor can see
    data["first_name"] = "王运营"
    answer = client.post(f"/admin/auth/user/{shared.pk}/change/", data)
    assert answer.status_code == 302, answer.content.decode()[:3000]
    shared.refresh_from_db()
    assert shared.first_name == "王运营"
    assert set(shared.staff_profile.hospitals.all()) == {a, b}


def test_an_english_browser_still_gets_the_console_in_chinese():
    page = console_client(make_staff(role=roles.OPERATIONS, hospitals=[make_hospital()])).get(
        "/admin/booking/registration/", HTTP_ACCEPT_LANGUAGE="en-US,en;q=0.9"
    )
    assert "挂号单" in page.content.decode() and "Select" not in page.content.decode()


def test_list_filters_read_as_chinese():
    page = console_client(make_staff(role=roles.OPERATIONS, hospitals=[make_hospital()])).get(
        "/admin/booking/registration/"
    )
    assert "按状态" in page.content.decode() and "以 " not in page.content.decode()
