"""The audit log as the auditor uses it: found by staff, object, detail or IP, filtered by action,
result and day, read with before/after in Chinese — and changed by nobody, not even a superuser,
and on PostgreSQL not even by raw SQL."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import DatabaseError, connection, transaction
from django.urls import reverse

from guahao import clock
from guahao.console import roles
from guahao.console.models import AuditEntry
from guahao.console.testing import console_client, make_staff, superuser_client
from guahao.testing import make_hospital

pytestmark = pytest.mark.django_db


def entry(**fields) -> AuditEntry:
    defaults = {
        "at": clock.now(),
        "staff_username": "li.sys",
        "action": AuditEntry.Action.CHANGE,
        "object_type": "医院",
        "object_id": "7",
        "object_repr": "测试医院",
        "client_ip": "10.1.2.3",
    }
    return AuditEntry.objects.create(**{**defaults, **fields})


@pytest.fixture
def hospital():
    return make_hospital(name="甲医院")


@pytest.fixture
def auditor(hospital):
    return console_client(make_staff(role=roles.AUDITOR, hospitals=[hospital]))


def changelist(client, **params) -> list[int]:
    response = client.get(reverse("admin:console_auditentry_changelist"), params)
    assert response.status_code == 200
    return sorted(row.pk for row in response.context["cl"].result_list)


def test_the_auditor_finds_rows_by_staff_object_detail_and_ip(auditor, hospital):
    a = entry(hospital_id=hospital.id, staff_username="wang.ops", detail="代患者取消")
    b = entry(hospital_id=hospital.id, object_id="4711", client_ip="192.168.9.9")
    assert changelist(auditor, q="wang.ops") == [a.pk]
    assert changelist(auditor, q="4711") == [b.pk]
    assert changelist(auditor, q="代患者") == [a.pk]
    assert changelist(auditor, q="192.168.9.9") == [b.pk]


def test_the_auditor_filters_by_action_result_and_day(auditor, hospital):
    today = entry(hospital_id=hospital.id, action=AuditEntry.Action.REVEAL)
    failed = entry(hospital_id=hospital.id, action=AuditEntry.Action.LOGIN_FAILED, result=AuditEntry.Result.FAILURE)
    old = entry(hospital_id=hospital.id, at=clock.now() - dt.timedelta(days=30))
    assert changelist(auditor, action="reveal") == [today.pk]
    assert changelist(auditor, result="failure") == [failed.pk]
    page = auditor.get(reverse("admin:console_auditentry_changelist"))
    html = page.content.decode()
    for label in ("今天", "过去7天", "操作", "结果"):
        assert label in html, label
    by_day = next(spec for spec in page.context["cl"].filter_specs if spec.title == "时间")
    links = {str(choice["display"]): choice["query_string"] for choice in by_day.choices(page.context["cl"])}
    url = reverse("admin:console_auditentry_changelist")
    week = auditor.get(url + links["过去7天"]).context["cl"].result_list
    assert old not in week and today in week and failed in week
    assert list(auditor.get(url + links["今天"]).context["cl"].result_list) == [failed, today]


def test_another_hospitals_rows_stay_hidden_from_the_auditor(auditor, hospital):
    mine = entry(hospital_id=hospital.id)
    entry(hospital_id=make_hospital().id)
    assert changelist(auditor) == [mine.pk]


def test_the_change_page_shows_before_and_after_with_chinese_field_names(auditor, hospital):
    row = entry(hospital_id=hospital.id, before={"browse_level": 2}, after={"browse_level": 3, "name": "甲医院"})
    page = auditor.get(reverse("admin:console_auditentry_change", args=[row.pk])).content.decode()
    assert "患者浏览的科室层级（browse_level）" in page
    assert "名称（name）" in page and "甲医院" in page
    assert 'name="_save"' not in page  # read-only: no save button


@pytest.mark.parametrize("who", ["auditor", "superuser"])
def test_nobody_changes_adds_or_deletes_an_audit_row_through_the_console(who, auditor, hospital):
    client = auditor if who == "auditor" else superuser_client()
    row = entry(hospital_id=hospital.id, detail="原始说明")
    change = reverse("admin:console_auditentry_change", args=[row.pk])
    assert client.post(change, {"detail": "改过的说明"}).status_code == 403
    assert client.get(reverse("admin:console_auditentry_add")).status_code == 403
    assert client.post(reverse("admin:console_auditentry_delete", args=[row.pk]), {"post": "yes"}).status_code == 403
    bulk = client.post(
        reverse("admin:console_auditentry_changelist"),
        {"action": "delete_selected", "_selected_action": [row.pk], "post": "yes"},
    )
    assert bulk.status_code in (200, 302)
    row.refresh_from_db()
    assert row.detail == "原始说明"
    assert AuditEntry.objects.filter(pk=row.pk).exists()


def test_the_list_offers_no_bulk_action_not_even_to_a_superuser():
    response = superuser_client().get(reverse("admin:console_auditentry_changelist"))
    assert response.context["action_form"] is None
    assert "delete_selected" not in response.content.decode()


@pytest.mark.postgres
@pytest.mark.parametrize("statement", [
    "UPDATE console_auditentry SET detail = 'x' WHERE id = %s",
    "DELETE FROM console_auditentry WHERE id = %s",
])
def test_on_postgresql_the_database_refuses_to_change_or_delete_a_row(statement):
    row = entry()
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(statement, [row.pk])
    row.refresh_from_db()
    assert row.detail == ""
