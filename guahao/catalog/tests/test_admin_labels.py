"""The catalog pages in the staff member's words: levels as 一级/二级/三级, channels by their Chinese
names, and filters that never name another hospital's hospitals or departments."""

from __future__ import annotations

import pytest
from django.urls import reverse

from guahao.console import roles
from guahao.console.testing import console_client, make_staff
from guahao.testing import make_department, make_doctor, make_hospital

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_hospitals():
    a, b = make_hospital(name="甲医院"), make_hospital(name="乙医院")
    inner = make_department(a, name="内科")
    make_doctor(make_department(a, name="心血管内科", parent=inner))
    make_doctor(make_department(b, name="乙院专属科室"))
    return a, b


def test_filters_name_only_the_staff_members_hospitals_and_departments(two_hospitals):
    a, _b = two_hospitals
    client = console_client(make_staff(role=roles.SYSTEM_ADMIN, hospitals=[a]))
    for model in ("department", "doctor", "campus", "notice"):
        html = client.get(reverse(f"admin:catalog_{model}_changelist")).content.decode()
        assert "乙医院" not in html and "乙院专属科室" not in html, model


def test_department_levels_and_payment_channels_read_in_chinese(two_hospitals):
    a, _b = two_hospitals
    client = console_client(make_staff(role=roles.SYSTEM_ADMIN, hospitals=[a]))
    departments = client.get(reverse("admin:catalog_department_changelist")).content.decode()
    assert "一级" in departments and "二级" in departments and "一级科室" in departments  # column and filter
    hospitals = client.get(reverse("admin:catalog_hospital_changelist")).content.decode()
    assert "微信支付、支付宝" in hospitals and "二级科室" in hospitals
    form = client.get(reverse("admin:catalog_hospital_change", args=[a.id])).content.decode()
    assert "患者从哪一级科室开始选择" in form and "三级科室（如 心律失常门诊）" in form
    assert "wechat 微信支付" not in form
