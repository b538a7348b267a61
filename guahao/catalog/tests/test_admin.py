from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from guahao.catalog.models import Department, Notice
from guahao.console.testing import superuser_client
from guahao.testing import make_department, make_doctor, make_hospital


@pytest.fixture
def operator(db) -> Client:
    return superuser_client()


def test_catalog_console_pages_open(operator):
    hospital = make_hospital()
    department = make_department(hospital, name="内科")
    make_doctor(make_department(hospital, name="心血管内科", parent=department))
    for model in ("hospital", "campus", "department", "doctor", "notice", "noticeack"):
        assert operator.get(reverse(f"admin:catalog_{model}_changelist")).status_code == 200, model
    notice = Notice.objects.get(hospital=hospital)
    assert operator.get(reverse("admin:catalog_notice_change", args=[notice.id])).status_code == 200
    assert operator.get(reverse("admin:catalog_department_change", args=[department.id])).status_code == 200


def test_a_department_level_follows_its_parent(operator):
    hospital = make_hospital()
    parent = make_department(hospital, name="外科")
    response = operator.post(
        reverse("admin:catalog_department_add"),
        {"hospital": hospital.id, "parent": parent.id, "code": "GK", "name": "骨科", "sort_order": 0, "is_active": "on"},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    assert Department.objects.get(code="GK").level == 2


def test_a_notice_changes_by_a_new_version(operator):
    hospital = make_hospital()
    old = Notice.objects.get(hospital=hospital)
    response = operator.post(
        reverse("admin:catalog_notice_changelist"),
        {"action": "copy_as_new_version", "_selected_action": [old.id]},
    )
    assert response.status_code == 302
    add_form = operator.get(response["Location"])
    assert old.body in add_form.content.decode()
    response = operator.post(
        reverse("admin:catalog_notice_add"),
        {"hospital": hospital.id, "kind": old.kind, "title": old.title, "body": "新版须知", "requires_ack": "on"},
    )
    assert response.status_code == 302
    new = Notice.objects.get(hospital=hospital, is_active=True)
    assert (new.version, new.body) == (2, "新版须知")
    old.refresh_from_db()
    assert old.is_active is False
