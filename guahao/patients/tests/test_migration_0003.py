"""Migration 0003 turns shared visiting patients into per-account records, on the rows a deployment
made the old way: links become records, holds and registrations follow their own account, names and
birth dates end up encrypted. Run on SQLite and PostgreSQL alike (and back again)."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from guahao import clock, pii
from guahao.patients.idcard import identity_index, parse_id_number
from guahao.testing import make_department, make_hospital, make_id_number, make_session

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = ("patients", "0002_auth_token_devices")
AFTER = ("patients", "0003_patient_per_account")


def _migrate(target: tuple[str, str] | None):
    """Migrate patients to `target` (None: every app to its latest) and return the models as of
    the migrations now applied."""
    executor = MigrationExecutor(connection)
    executor.migrate([target] if target else executor.loader.graph.leaf_nodes())
    loader = MigrationExecutor(connection).loader
    return loader.project_state(list(loader.applied_migrations)).apps


@pytest.fixture
def at_0002():
    apps = _migrate(BEFORE)
    try:
        yield apps
    finally:
        _migrate(None)  # leave the database as every other test expects it


def _raw(table: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
        return repr(cursor.fetchall())


def test_shared_patients_become_records_of_each_account(at_0002) -> None:
    old = at_0002
    Account, Patient = old.get_model("patients", "Account"), old.get_model("patients", "Patient")
    AccountPatient, PatientCard = old.get_model("patients", "AccountPatient"), old.get_model("patients", "PatientCard")
    Hold, Registration = old.get_model("booking", "Hold"), old.get_model("booking", "Registration")

    hospital = make_hospital()
    session = make_session(make_department(hospital), slots=4)
    slots = list(session.slots.order_by("seq"))
    now = clock.now()

    def account(phone: str):
        return Account.objects.create(phone=phone, phone_index=pii.blind_index(phone, purpose="phone"))

    def person(name: str, number: str):
        return Patient.objects.create(
            name=name,
            id_type="resident",
            id_number=number,
            id_index=identity_index(parse_id_number(number)),
            sex="M" if int(number[16]) % 2 else "F",
            birth_date=dt.date(int(number[6:10]), int(number[10:12]), int(number[12:14])),
            phone="13900001111",
            verified_at=now,
        )

    def hold(acc, patient, slot, state: str):
        return Hold.objects.create(
            account_id=acc.id, patient_id=patient.id, slot_id=slot.id, session_id=session.id, state=state,
            expires_at=now, fee_fen=1000, created_at=now, updated_at=now,
        )  # fmt: skip

    a1, a2, a3 = account("13811110001"), account("13811110002"), account("13811110003")
    number1, number2 = make_id_number("19900307"), make_id_number("19851111")
    shared = person("张三丰", number1)  # linked by a1 (本人) and a2 (父母)
    child = person("欧阳娜娜", number2)  # linked by a1; a3 removed it but has a hold for it
    nobody = person("钱七", make_id_number())  # no link, nothing refers to it
    AccountPatient.objects.create(account_id=a1.id, patient_id=shared.id, relation="self")
    AccountPatient.objects.create(account_id=a2.id, patient_id=shared.id, relation="parent")
    AccountPatient.objects.create(account_id=a1.id, patient_id=child.id, relation="child")
    PatientCard.objects.create(patient_id=shared.id, hospital_id=hospital.id, card_no="HIS0001")
    h1 = hold(a1, shared, slots[0], "released")
    h2 = hold(a2, shared, slots[1], "succeeded")
    h3 = hold(a3, child, slots[2], "released")
    r2 = Registration.objects.create(
        hold_id=h2.id, account_id=a2.id, patient_id=shared.id, slot_id=slots[1].id, session_id=session.id,
        registration_no="R0001", status="booked", fee_fen=1000, booked_at=now,
    )  # fmt: skip
    assert "张三丰" in _raw("patients_patient")  # the old way: names in clear

    new = _migrate(AFTER)
    Patient = new.get_model("patients", "Patient")
    Hold, Registration = new.get_model("booking", "Hold"), new.get_model("booking", "Registration")
    PatientCard = new.get_model("patients", "PatientCard")

    records = {(p.account_id, p.id_index): p for p in Patient.objects.all()}
    index1 = identity_index(parse_id_number(number1))
    index2 = identity_index(parse_id_number(number2))
    assert set(records) == {(a1.id, index1), (a2.id, index1), (a1.id, index2), (a3.id, index2)}
    assert not Patient.objects.filter(id=nobody.id).exists()

    mine, my_parent = records[(a1.id, index1)], records[(a2.id, index1)]
    assert mine.id == shared.id  # the first account keeps the original row
    assert (mine.relation, my_parent.relation) == ("self", "parent")
    for record in (mine, my_parent):
        assert record.name == "张三丰"
        assert record.name_index == pii.blind_index("张三丰", purpose="name")
        assert record.birth_date == dt.date(1990, 3, 7)
        assert record.id_number == number1
        assert record.phone == "13900001111"
        assert record.phone_index == pii.blind_index("13900001111", purpose="phone")
        assert record.removed_at is None
        assert PatientCard.objects.filter(patient_id=record.id, card_no="HIS0001").count() == 1

    kept, removed = records[(a1.id, index2)], records[(a3.id, index2)]
    assert (kept.relation, kept.removed_at) == ("child", None)
    assert removed.removed_at is not None  # a3 had taken it off its list; its hold still points here
    assert removed.name == "欧阳娜娜" and removed.birth_date == dt.date(1985, 11, 11)

    assert Hold.objects.get(id=h1.id).patient_id == mine.id
    assert Hold.objects.get(id=h2.id).patient_id == my_parent.id
    assert Registration.objects.get(id=r2.id).patient_id == my_parent.id
    assert Hold.objects.get(id=h3.id).patient_id == removed.id

    raw = _raw("patients_patient")
    for clear in ("张三丰", "欧阳娜娜", "1990-03-07", "1985-11-11", number1, "13900001111"):
        assert clear not in raw
    assert "patients_accountpatient" not in connection.introspection.table_names()

    # And back: one shared row per person again, linked to the accounts that list it.
    back = _migrate(BEFORE)
    Patient, AccountPatient = back.get_model("patients", "Patient"), back.get_model("patients", "AccountPatient")
    Hold = back.get_model("booking", "Hold")
    assert sorted(Patient.objects.values_list("name", flat=True)) == ["张三丰", "欧阳娜娜"]
    shared_again = Patient.objects.get(id_index=index1)
    assert shared_again.birth_date == dt.date(1990, 3, 7)
    assert sorted(AccountPatient.objects.filter(patient_id=shared_again.id).values_list("account_id", "relation")) == [
        (a1.id, "self"),
        (a2.id, "parent"),
    ]
    assert set(Hold.objects.values_list("patient_id", flat=True)) == set(Patient.objects.values_list("id", flat=True))
