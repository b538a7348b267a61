"""The console shows accounts and patients with masked phones and ID numbers, never in clear."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from guahao.patients.models import AccountPatient
from guahao.testing import make_account, make_hospital, make_patient

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator() -> Client:
    user = get_user_model().objects.create_superuser("admin", "admin@example.com", "pw-not-secret")
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def world():
    account = make_account("13812345678")
    patient = make_patient(account, name="张三丰")
    patient.cards.create(hospital=make_hospital(), card_no="HIS0001")
    return account, patient


def _pages(account, patient) -> list[str]:
    link = AccountPatient.objects.get(account=account, patient=patient)
    return [
        "/admin/patients/account/",
        f"/admin/patients/account/{account.pk}/change/",
        "/admin/patients/patient/",
        f"/admin/patients/patient/{patient.pk}/change/",
        "/admin/patients/accountpatient/",
        f"/admin/patients/accountpatient/{link.pk}/change/",
        "/admin/patients/patientcard/",
        f"/admin/patients/patientcard/{patient.cards.get().pk}/change/",
    ]


def test_no_console_page_shows_a_clear_phone_or_id_number(operator, world) -> None:
    account, patient = world

    for page in _pages(account, patient):
        response = operator.get(page)
        html = response.content.decode()
        assert response.status_code == 200, page
        assert account.phone not in html, page
        assert patient.phone not in html, page
        assert patient.id_number not in html, page
        assert "张三丰" not in html, page


def test_the_patient_page_shows_the_masked_identity(operator, world) -> None:
    _, patient = world

    html = operator.get(f"/admin/patients/patient/{patient.pk}/change/").content.decode()

    assert "张*丰" in html
    assert patient.id_number[:3] + "*" * 11 + patient.id_number[-4:] in html


def test_operators_find_an_account_by_its_full_phone(operator, world) -> None:
    account, _ = world
    make_account()

    response = operator.get("/admin/patients/account/", {"q": "13812345678"})

    assert [a.pk for a in response.context["cl"].result_list] == [account.pk]
    assert "138****5678" in response.content.decode()


def test_operators_find_a_patient_by_full_id_number(operator, world) -> None:
    _, patient = world
    make_patient(make_account(), name="李四")

    response = operator.get("/admin/patients/patient/", {"q": patient.id_number})

    assert [p.pk for p in response.context["cl"].result_list] == [patient.pk]
