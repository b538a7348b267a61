"""Rules that follow the real person, not the account's record of them: each account keeps its own
visiting-patient record, but a ban and the one-booking-per-session rule find the person by the ID's
blind index, whichever account books them."""

from __future__ import annotations

import datetime as dt

import pytest

from guahao import clock
from guahao.booking import services
from guahao.booking.models import Registration
from guahao.booking.states import HoldState, RegistrationStatus
from guahao.errors import Conflict, Forbidden
from guahao.patients import services as patients
from guahao.policies.services import restrict_patient
from guahao.testing import make_account

from .conftest import confirmed, paid, ready_to_book
from .interleave import race


def _same_person_in_a_new_account(world, patient):
    """A new account adds the same real person through the ordinary real-name flow."""
    account = make_account()
    ready_to_book(account, world.hospital, name="王小明")  # its own 本人, and the notices read
    record = patients.add_patient(
        account=account,
        name=patient.name,
        id_type=patient.id_type,
        id_number=patient.id_number,
        phone="13766667777",
        relation="parent",
        client_ip="10.1.1.1",
    )
    assert record.pk != patient.pk and record.id_index == patient.id_index
    return account, record


def test_a_ban_follows_the_person_into_a_new_account(world, booker):
    _, patient = booker
    restrict_patient(
        hospital=world.hospital,
        id_type=patient.id_type,
        id_number=patient.id_number,
        reason="爽约3次",
        until=clock.today() + dt.timedelta(days=30),
    )
    account, record = _same_person_in_a_new_account(world, patient)

    with pytest.raises(Forbidden) as refused:
        confirmed(world, account, record)

    assert refused.value.code == "patient_restricted"
    assert "爽约3次" in refused.value.message


def test_a_ban_on_one_person_does_not_touch_another_record_of_the_new_account(world, booker):
    _, patient = booker
    restrict_patient(
        hospital=world.hospital,
        id_type=patient.id_type,
        id_number=patient.id_number,
        reason="爽约3次",
        until=clock.today() + dt.timedelta(days=30),
    )
    account = make_account()
    someone_else = ready_to_book(account, world.hospital, name="王小明")

    assert confirmed(world, account, someone_else).patient_id == someone_else.pk


def test_one_person_cannot_hold_one_session_twice_from_two_accounts(world, booker):
    first_account, patient = booker
    confirmed(world, first_account, patient, seq=1)
    account, record = _same_person_in_a_new_account(world, patient)

    with pytest.raises(Conflict) as refused:
        confirmed(world, account, record, seq=2)

    assert refused.value.code == "duplicate_booking"


def test_one_person_registered_in_a_session_cannot_book_it_again_from_another_account(world, booker):
    first_account, patient = booker
    hold, _ = paid(world, first_account, patient, seq=1)
    services.check_payment(account=first_account, hold_id=hold.id)
    assert Registration.objects.get(hold=hold).status == RegistrationStatus.BOOKED
    account, record = _same_person_in_a_new_account(world, patient)

    with pytest.raises(Conflict) as refused:
        confirmed(world, account, record, seq=2)

    assert refused.value.code == "duplicate_booking"


def test_two_different_people_of_two_accounts_book_one_session(world, booker):
    first_account, patient = booker
    confirmed(world, first_account, patient, seq=1)
    account = make_account()
    other = ready_to_book(account, world.hospital, name="王小明")
    assert other.id_index != patient.id_index

    assert confirmed(world, account, other, seq=2).state == HoldState.HELD


def test_a_removed_record_still_counts_for_its_live_hold(world, booker):
    first_account, patient = booker
    confirmed(world, first_account, patient, seq=1)
    patients.remove_patient(account=first_account, patient_id=patient.pk)
    account, record = _same_person_in_a_new_account(world, patient)

    with pytest.raises(Conflict) as refused:
        confirmed(world, account, record, seq=2)

    assert refused.value.code == "duplicate_booking"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_accounts_confirming_one_person_at_the_same_moment_book_them_once(world, booker):
    """The first confirmation pauses inside its transaction, right after attaching the person;
    the second, from another account with its own record of the same person, must wait for it
    and then be refused. Checked and written in separate steps, both would pass."""
    first_account, patient = booker
    account, record = _same_person_in_a_new_account(world, patient)
    slots = list(world.session.slots.order_by("seq"))
    first_hold = services.hold_slot(account=first_account, slot_id=slots[0].id)
    second_hold = services.hold_slot(account=account, slot_id=slots[1].id)

    def confirm(who, hold, person):
        return lambda: services.confirm_hold(
            account=who, hold_id=hold.id, patient_id=person.pk, channel="wechat", insurance=False
        )

    out = race(
        confirm(first_account, first_hold, patient),
        confirm(account, second_hold, record),
        pause_first_after='UPDATE "booking_hold"',
    )

    assert not isinstance(out["first"], Exception), out["first"]
    assert isinstance(out["second"], Conflict) and out["second"].code == "duplicate_booking"
    second_hold.refresh_from_db()
    assert second_hold.patient_id is None
