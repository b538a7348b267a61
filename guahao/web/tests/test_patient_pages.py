"""就诊人管理 with Django's test client: the list is masked, adding shows each refusal at its field,
remove and 设为默认 go through the patients services."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction
from django.test import Client

from guahao.errors import NotFound
from guahao.patients.models import Patient
from guahao.patients.realname.sandbox import MISMATCH_MARK
from guahao.patients.services import remove_patient, set_default_patient
from guahao.testing import make_account, make_id_number, make_patient
from guahao.web.tests.conftest import sign_in_client

pytestmark = pytest.mark.django_db

GOOD = {"name": "赵六", "id_type": "resident", "phone": "13912345678", "relation": "parent"}


def test_list_shows_patients_masked_with_relation_and_age(account, patient_client):
    id_number = make_id_number("19800101")
    make_patient(account, name="张三丰", id_number=id_number, phone="13800001111")
    text = patient_client.get("/me/patients").content.decode()
    assert "张*丰" in text and "本人" in text and "岁" in text
    assert "138****1111" in text and "张三丰" not in text and id_number not in text and "13800001111" not in text


def test_adding_a_patient_verifies_and_returns_to_the_list(account, patient_client):
    response = patient_client.post("/me/patients/add", {**GOOD, "id_number": make_id_number()})
    assert response.status_code == 302 and response["Location"] == "/me/patients?done=added"
    patient = Patient.objects.get(account=account)
    assert patient.verified_at is not None and patient.is_default  # the first one is the default


def test_every_wrong_field_is_shown_at_the_field(account, patient_client):
    response = patient_client.post(
        "/me/patients/add", {"name": "张", "id_type": "resident", "id_number": "110105199003070001", "phone": "12345", "relation": ""}
    )
    text = response.content.decode()
    assert response.status_code == 400
    assert 'data-testid="error-name"' in text and "姓名应为2至30个字" in text
    assert 'data-testid="error-id_number"' in text and "校验位不正确" in text
    assert 'data-testid="error-phone"' in text and "手机号格式不正确" in text
    assert 'data-testid="error-relation"' in text
    assert 'value="110105199003070001"' in text  # what was typed stays in the form
    assert not Patient.objects.filter(account=account).exists()


def test_a_realname_refusal_is_shown_at_the_id_number(account, patient_client):
    response = patient_client.post(
        "/me/patients/add", {**GOOD, "name": f"赵{MISMATCH_MARK}", "id_number": make_id_number()}
    )
    text = response.content.decode()
    assert response.status_code == 400 and 'data-testid="error-id_number"' in text and "实名核验未通过" in text


def test_a_second_self_is_refused_at_the_relation(account, patient_client):
    make_patient(account)
    response = patient_client.post("/me/patients/add", {**GOOD, "relation": "self", "id_number": make_id_number()})
    assert response.status_code == 409 and 'data-testid="error-relation"' in response.content.decode()


def test_adding_from_the_hold_page_returns_there_with_the_new_patient(account, patient_client):
    response = patient_client.post("/me/patients/add", {**GOOD, "id_number": make_id_number(), "next": "/holds/7"})
    patient = Patient.objects.get(account=account)
    assert response["Location"] == f"/holds/7?patient={patient.id}"
    evil = patient_client.post("/me/patients/add", {**GOOD, "relation": "child", "id_number": make_id_number(), "next": "//evil.example/"})
    assert evil["Location"] == "/me/patients?done=added"


def test_choose_the_default_and_remove(account, patient_client):
    first = make_patient(account, name="张三")
    second = make_patient(account, name="李四", relation="spouse")
    set_default_patient(account=account, patient_id=first.id)
    response = patient_client.post(f"/me/patients/{second.id}/default")
    assert response.status_code == 302
    first.refresh_from_db()
    second.refresh_from_db()
    assert second.is_default and not first.is_default
    patient_client.post(f"/me/patients/{second.id}/remove")
    second.refresh_from_db()
    assert second.removed_at is not None and not second.is_default
    assert "李*" not in patient_client.get("/me/patients").content.decode()


def test_another_accounts_patient_is_a_missing_one(world, account, patient_client):
    stranger = make_patient(make_account())
    for path in (f"/me/patients/{stranger.id}/default", f"/me/patients/{stranger.id}/remove"):
        response = patient_client.post(path)
        assert response.status_code == 404 and "就诊人不存在" in response.content.decode()
    stranger.refresh_from_db()
    assert stranger.removed_at is None


def test_one_default_per_account_among_active_records(account):
    first = make_patient(account, name="张三")
    second = make_patient(account, name="李四", relation="spouse")
    set_default_patient(account=account, patient_id=first.id)
    with pytest.raises(IntegrityError), transaction.atomic():
        Patient.objects.filter(id=second.id).update(is_default=True)
    remove_patient(account=account, patient_id=first.id)
    set_default_patient(account=account, patient_id=second.id)  # a removed default does not count
    with pytest.raises(NotFound):
        set_default_patient(account=account, patient_id=first.id)


def test_patients_page_of_a_stranger_shows_only_their_own(account, patient_client):
    make_patient(account, name="张三")
    stranger = sign_in_client(Client(), make_account())
    assert 'data-testid="patient"' not in stranger.get("/me/patients").content.decode()
