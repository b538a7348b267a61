"""Rotating the personal-data keys while the service runs: rows written under the old keys stay
readable and findable, new rows use the new keys, `guahao rotate-keys` moves everything in batches
without losing a concurrent write, and afterwards the old keys can go."""

from __future__ import annotations

import datetime as dt
import io
import threading

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.db import connection

from guahao import clock, keyrotation, pii
from guahao.booking import services as booking
from guahao.booking.tests.conftest import World, confirmed, ready_to_book
from guahao.environment import PRODUCTION, Deployment, problems
from guahao.errors import Conflict, Forbidden
from guahao.patients import selectors, services
from guahao.patients.models import Account, Patient
from guahao.patients.tests.conftest import SmsOutbox, sms_outbox  # noqa: F401 (the fixture)
from guahao.policies.services import restrict_patient
from guahao.testing import (
    make_account,
    make_department,
    make_doctor,
    make_hospital,
    make_id_number,
    make_patient,
    make_phone,
    make_session,
)

OLD_DATA, OLD_INDEX = "0f1e2d3c4b5a69788796a5b4c3d2e1f0", "a1b2c3d4e5f60718293a4b5c6d7e8f90"
NEW_DATA, NEW_INDEX = "1234567890abcdef0fedcba987654321", "fedcba98765432100123456789abcdef"
IP = "198.51.100.61"


@pytest.fixture
def old_keys(settings) -> None:
    settings.DATA_KEY, settings.INDEX_KEY = OLD_DATA, OLD_INDEX
    settings.DATA_KEYS = settings.INDEX_KEYS = ""
    settings.LIMITS = settings.LIMITS | {"patient_add_account": "100/h", "patient_add_ip": "100/h"}


def new_keys(settings) -> None:
    """The deployment step: the new keys first, the old single keys kept (as retired key 1)."""
    settings.DATA_KEYS, settings.INDEX_KEYS = f"2:{NEW_DATA}", f"2:{NEW_INDEX}"


def old_keys_removed(settings) -> None:
    settings.DATA_KEY = settings.INDEX_KEY = ""


def raw(model: type, pk: int, column: str) -> str:
    """A column as stored, not decrypted."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {column} FROM {model._meta.db_table} WHERE id = %s", [pk])
        return cursor.fetchone()[0]


def sign_in(outbox: SmsOutbox, phone: str) -> Account:
    services.send_sms_code(phone=phone, client_ip=IP)
    token = services.login(phone=phone, code=outbox.last_code(phone), client_ip=IP)
    return selectors.account_for_token(token)


def add(account: Account, id_number: str, *, name: str = "王小明") -> Patient:
    return services.add_patient(
        account=account, name=name, id_type="resident", id_number=id_number,
        phone=make_phone(), relation="other", client_ip=IP,
    )  # fmt: skip


def make_world() -> World:
    hospital = make_hospital()
    department = make_department(hospital, name="心血管内科")
    doctor = make_doctor(department, name="李建国")
    return World(hospital, department, doctor, make_session(department, doctor=doctor, slots=4))


def rotate_all(batch_size: int = 500) -> list[keyrotation.Batch]:
    return list(keyrotation.rotate(batch_size=batch_size))


def rotate_half() -> None:
    """Stop `rotate-keys` after the first batch of patients: accounts moved, patients partly."""
    for batch in keyrotation.rotate(batch_size=1):
        if batch.table == "patients.patient":
            return


def check() -> tuple[int, str]:
    out = io.StringIO()
    try:
        call_command("rotate-keys", "--check", stdout=out)
    except SystemExit as exit_:
        return int(exit_.code), out.getvalue()
    return 0, out.getvalue()


@pytest.mark.django_db
def test_old_rows_stay_readable_and_new_rows_are_written_with_the_new_keys(settings, old_keys):
    before = make_patient(make_account(), name="赵一", id_number=(number := make_id_number()))
    assert raw(Patient, before.pk, "name").startswith("v1:")

    new_keys(settings)
    after = make_patient(make_account(), name="钱二")

    again = Patient.objects.get(pk=before.pk)
    assert (again.name, again.id_number, again.birth_date) == ("赵一", number, before.birth_date)
    assert raw(Patient, after.pk, "name").startswith("k2:")
    assert raw(Patient, after.pk, "id_number").startswith("k2:")
    assert Patient.objects.get(pk=after.pk).name == "钱二"
    assert after.name_index == pii.blind_index("钱二", purpose="name")
    assert after.name_index != before.name_index  # the new index key, not the old one


@pytest.mark.django_db
@pytest.mark.parametrize("phase", ["before", "during", "after"])
def test_sign_in_duplicate_checks_and_bans_hold_across_a_rotation(
    settings, old_keys, sms_outbox, phase  # noqa: F811 (the fixture imported above)
):
    world = make_world()
    phone, number = make_phone(), make_id_number()
    first = sign_in(sms_outbox, phone)
    theirs = ready_to_book(first, world.hospital, name="孙三")
    booked = confirmed(world, first, theirs)  # the person holds number 1 under the old keys
    banned_number = make_id_number()
    ban_holder = make_account()
    make_patient(ban_holder, name="周五", id_number=banned_number)
    restrict_patient(
        hospital=world.hospital, id_type="resident", id_number=banned_number,
        reason="扰乱就诊秩序", until=booked.session.date,
    )  # fmt: skip
    add(first, number)

    new_keys(settings)
    if phase == "during":
        rotate_half()
    elif phase == "after":
        rotate_all()

    # Signing in again finds the same account, whichever key its phone digest is under.
    assert selectors.account_for_phone(phone) == first
    with clock.travel(dt.timedelta(seconds=61)):  # past the resend interval
        assert sign_in(sms_outbox, phone) == first
    assert Account.objects.count() == 2
    # Adding the same person twice to one account is still refused.
    with pytest.raises(Conflict) as exists:
        add(first, number)
    assert exists.value.code == "patient_exists"
    # Another account's new record of the booked person (new index key) cannot book the same
    # session twice.
    other = make_account()
    ready_to_book(other, world.hospital)  # notices acknowledged
    same_person = add(other, theirs.id_number, name="孙三")
    hold = booking.hold_slot(account=other, slot_id=world.session.slots.get(seq=2).id)
    with pytest.raises(Conflict) as duplicate:
        booking.confirm_hold(
            account=other, hold_id=hold.id, patient_id=same_person.id, channel="wechat",
            insurance=False,
        )  # fmt: skip
    assert duplicate.value.code == "duplicate_booking"
    # A ban set under the old keys still stops the person, from an account added under the new.
    third = make_account()
    ready_to_book(third, world.hospital)
    banned = add(third, banned_number, name="周五")
    hold = booking.hold_slot(account=third, slot_id=world.session.slots.get(seq=3).id)
    with pytest.raises(Forbidden):
        booking.confirm_hold(
            account=third, hold_id=hold.id, patient_id=banned.id, channel="wechat", insurance=False
        )


@pytest.mark.django_db
def test_a_sign_in_code_sent_just_before_the_index_key_changed_still_works(
    settings, old_keys, sms_outbox  # noqa: F811 (the fixture imported above)
):
    phone = make_phone()
    account = sign_in(sms_outbox, phone)
    with clock.travel(dt.timedelta(seconds=61)):
        services.send_sms_code(phone=phone, client_ip="198.51.100.62")

        new_keys(settings)
        token = services.login(phone=phone, code=sms_outbox.last_code(phone), client_ip="198.51.100.62")

    assert selectors.account_for_token(token) == account


@pytest.mark.django_db
def test_rotate_keys_works_in_batches_is_idempotent_and_check_says_when_to_stop(settings, old_keys):
    patients = [make_patient(make_account(), name=f"患者{i}") for i in range(5)]
    new_keys(settings)
    status, report = check()
    assert status == 1
    assert "patients.patient\t5 rows on a retired key" in report

    out = io.StringIO()
    call_command("rotate-keys", "--batch-size", "2", stdout=out)

    lines = out.getvalue().splitlines()
    patient_batches = [line for line in lines if line.startswith("patients.patient\t")]
    assert len(patient_batches) == 3  # 5 rows in batches of 2
    assert "rotated 2" in patient_batches[0] and "rotated 1" in patient_batches[2]
    assert "10 rotated" in lines[-1] and "0 skipped" in lines[-1]  # 5 accounts, 5 patients
    for patient in patients:
        assert raw(Patient, patient.pk, "name").startswith("k2:")
        assert raw(Patient, patient.pk, "phone").startswith("k2:")
        assert raw(Patient, patient.pk, "id_index") == pii.blind_index(
            f"resident:{patient.id_number}", purpose="id"
        )
        assert raw(Account, patient.account_id, "phone").startswith("k2:")
    assert check()[0] == 0

    out = io.StringIO()
    call_command("rotate-keys", "--batch-size", "2", stdout=out)
    assert "0 rotated" in out.getvalue().splitlines()[-1]


@pytest.mark.django_db(transaction=True)
def test_a_write_by_the_running_service_during_a_batch_is_not_lost(settings, old_keys):
    patient = make_patient(make_account(), name="吴六")
    neighbour = make_patient(make_account(), name="郑七")
    new_keys(settings)
    read, go = threading.Event(), threading.Event()
    batches: list[keyrotation.Batch] = []
    failure: list[BaseException] = []

    def pause(batch: keyrotation.Batch) -> None:
        if batch.table == "patients.patient":
            read.set()
            assert go.wait(10)

    def rotate_in_thread() -> None:
        try:
            batches.extend(keyrotation.rotate(batch_size=500, between=pause))
        except BaseException as exc:  # reported in the main thread
            failure.append(exc)
        finally:
            connection.close()

    rotation = threading.Thread(target=rotate_in_thread)
    rotation.start()
    assert read.wait(10)
    # Meanwhile the service changes one patient's phone and another's default mark.
    new_phone = make_phone()
    patient.phone, patient.phone_index = new_phone, pii.blind_index(new_phone, purpose="phone")
    patient.save(update_fields=["phone", "phone_index"])
    Patient.objects.filter(pk=neighbour.pk).update(is_default=True)
    go.set()
    rotation.join(20)

    assert not failure, failure
    patient_batch = next(b for b in batches if b.table == "patients.patient")
    assert (patient_batch.rotated, patient_batch.skipped) == (1, 1)
    mine = Patient.objects.get(pk=patient.pk)
    assert mine.phone == new_phone  # the service's write stands
    assert raw(Patient, patient.pk, "phone").startswith("k2:")
    assert Patient.objects.get(pk=neighbour.pk).is_default  # the columns rotation did not touch
    # Running again finishes the row the service wrote (its name is still under the old key).
    rotate_all()
    assert check()[0] == 0
    assert raw(Patient, patient.pk, "name").startswith("k2:")


@pytest.mark.django_db
def test_after_rotation_the_old_keys_can_be_removed(settings, old_keys):
    world = make_world()
    account = make_account()
    patient = ready_to_book(account, world.hospital, name="冯八")
    restrict_patient(
        hospital=world.hospital, id_type="resident", id_number=patient.id_number,
        reason="扰乱就诊秩序", until=world.session.date,
    )  # fmt: skip
    stranger = make_id_number()  # banned by ID, never added by anyone: no clear value to re-index
    restrict_patient(
        hospital=world.hospital, id_type="resident", id_number=stranger, reason="医院设置",
        until=world.session.date,
    )  # fmt: skip
    new_keys(settings)
    rotate_all(batch_size=2)
    status, report = check()
    assert status == 0
    assert "policies.restriction.patient_index\t1 digests match no patient" in report

    old_keys_removed(settings)

    again = Patient.objects.get(pk=patient.pk)
    assert (again.name, again.phone) == ("冯八", patient.phone)
    assert selectors.account_for_phone(account.phone) == account
    hold = booking.hold_slot(account=account, slot_id=world.session.slots.get(seq=1).id)
    with pytest.raises(Forbidden):  # the ban moved with the patient's digest
        booking.confirm_hold(
            account=account,
            hold_id=hold.id,
            patient_id=patient.id,
            channel="wechat",
            insurance=False,
        )


@pytest.mark.django_db
def test_removing_a_key_before_its_rows_are_moved_is_caught(settings, old_keys):
    patient = make_patient(make_account(), name="陈九")
    settings.DATA_KEY, settings.DATA_KEYS = "", f"2:{NEW_DATA}"

    with pytest.raises(ValueError, match="key 1 is not configured"):
        Patient.objects.get(pk=patient.pk)
    out = io.StringIO()
    with pytest.raises(Exception, match="key 1 is not configured"):
        call_command("rotate-keys", stdout=out)


def test_key_lists_are_checked_at_start_in_production():
    def deployment(**keys: str) -> list[str]:
        base = {"data_key": "", "index_key": "", "data_keys": "", "index_keys": ""} | keys
        found = problems(
            Deployment(PRODUCTION, "Kx9-q2Lm" * 8, debug=False, adapters={}, **base), []
        )
        return [p for p in found if "_DATA_KEY" in p or "_INDEX_KEY" in p or "索引密钥" in p]

    assert deployment(data_keys=f"2:{NEW_DATA}", index_keys=f"2:{NEW_INDEX}") == []
    assert deployment(data_key=OLD_DATA, index_key=OLD_INDEX, data_keys=f"2:{NEW_DATA}") == []
    assert any(
        "GUAHAO_DATA_KEYS[2]" in p
        for p in deployment(data_keys="2:abc", index_keys=f"2:{NEW_INDEX}")
    )
    assert any(
        "重复" in p
        for p in deployment(data_keys=f"2:{NEW_DATA},2:{OLD_DATA}", index_keys=f"2:{NEW_INDEX}")
    )
    assert any(
        "different value" in p
        for p in deployment(data_key=OLD_DATA, data_keys=f"1:{NEW_DATA}", index_key=OLD_INDEX)
    )


def test_a_malformed_key_list_refuses_to_start(settings):
    settings.DATA_KEYS = "two"
    with pytest.raises(ImproperlyConfigured):
        pii.encrypt("x")
