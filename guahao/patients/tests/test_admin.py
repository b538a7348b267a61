"""The console shows accounts and patients with masked phones and ID numbers, never in clear."""

from __future__ import annotations

import pytest
from django.test import Client

from guahao.console.testing import superuser_client
from guahao.errors import Conflict
from guahao.patients import services
from guahao.testing import make_account, make_hospital, make_patient

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator() -> Client:
    return superuser_client()


@pytest.fixture
def world():
    account = make_account("13812345678")
    patient = make_patient(account, name="张三丰")
    patient.cards.create(hospital=make_hospital(), card_no="HIS0001")
    return account, patient


def _pages(account, patient) -> list[str]:
    with pytest.raises(Conflict):  # recorded as an attempt all the same
        services.add_patient(
            account=account, name="张三丰", id_type="resident", id_number=patient.id_number,
            phone=patient.phone, relation="other", client_ip="10.0.0.9",
        )  # fmt: skip
    return [
        "/admin/patients/account/",
        f"/admin/patients/account/{account.pk}/change/",
        "/admin/patients/patient/",
        f"/admin/patients/patient/{patient.pk}/change/",
        "/admin/patients/patientaddattempt/",
        f"/admin/patients/patientaddattempt/{account.patient_add_attempts.get().pk}/change/",
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
        assert str(patient.birth_date) not in html, page
        assert patient.birth_date.strftime("%Y年%m月%d日") not in html, page


def test_the_patient_page_shows_the_masked_identity(operator, world) -> None:
    _, patient = world

    html = operator.get(f"/admin/patients/patient/{patient.pk}/change/").content.decode()

    assert "张*丰" in html
    assert patient.id_number[0] + "*" * 16 + patient.id_number[-1] in html


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


def test_operators_find_a_patient_by_full_name_or_phone_through_blind_indexes(operator, world) -> None:
    account, patient = world
    other = make_patient(make_account(), name="李四")

    def found(term: str) -> list[int]:
        response = operator.get("/admin/patients/patient/", {"q": term})
        return sorted(p.pk for p in response.context["cl"].result_list)

    assert found("张三丰") == [patient.pk]
    assert found("张三") == []  # exact full names only
    assert found(patient.phone) == [patient.pk]  # the patient's own phone
    assert found("13812345678") == [patient.pk]  # or the phone of the account that added it
    assert found(other.id_number) == [other.pk]
    assert found("nonsense") == []


def test_the_same_person_under_two_accounts_is_two_records_found_by_one_id_number(
    operator, world
) -> None:
    _, patient = world
    theirs = make_patient(make_account(), name="张三丰", id_number=patient.id_number)

    response = operator.get("/admin/patients/patient/", {"q": patient.id_number})

    assert sorted(p.pk for p in response.context["cl"].result_list) == [patient.pk, theirs.pk]


def test_the_patient_list_shows_age_not_birth_date(operator, world) -> None:
    _, patient = world

    html = operator.get("/admin/patients/patient/").content.decode()

    assert "年龄" in html
    assert "出生日期" not in html


def test_add_attempts_are_listed_read_only_and_filtered_by_outcome(operator, world) -> None:
    account, patient = world
    with pytest.raises(Conflict):
        services.add_patient(
            account=account, name="张三丰", id_type="resident", id_number=patient.id_number,
            phone=patient.phone, relation="other", client_ip="10.0.0.9",
        )  # fmt: skip

    exists = operator.get("/admin/patients/patientaddattempt/", {"outcome__exact": "exists"})
    added = operator.get("/admin/patients/patientaddattempt/", {"outcome__exact": "added"})
    by_id = operator.get("/admin/patients/patientaddattempt/", {"q": patient.id_number})
    by_ip = operator.get("/admin/patients/patientaddattempt/", {"q": "10.0.0.9"})
    by_phone = operator.get("/admin/patients/patientaddattempt/", {"q": "13812345678"})

    assert len(exists.context["cl"].result_list) == 1
    assert len(added.context["cl"].result_list) == 0
    for response in (by_id, by_ip, by_phone):
        assert len(response.context["cl"].result_list) == 1
    attempt = account.patient_add_attempts.get()
    change = operator.get(f"/admin/patients/patientaddattempt/{attempt.pk}/change/")
    assert change.status_code == 200
    assert 'name="_save"' not in change.content.decode()
    assert operator.get("/admin/patients/patientaddattempt/add/").status_code == 403
