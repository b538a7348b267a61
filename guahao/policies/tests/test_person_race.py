"""The per-person daily limit under concurrency: two accounts choosing the same real person at
the same moment, for what would be that person's 4th booking of the day."""

from __future__ import annotations

import pytest

from guahao.booking import services
from guahao.booking.models import Hold
from guahao.booking.tests.conftest import ready_to_book
from guahao.booking.tests.interleave import race
from guahao.errors import Conflict
from guahao.testing import make_account, make_patient

from .conftest import confirm, session_on


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_accounts_choosing_one_person_for_a_fourth_booking_only_one_passes(clinic):
    """The first confirmation pauses inside its transaction right after attaching the person;
    the second, from another account with its own record of the same person, must wait for it
    and then be refused. Counted and written in separate steps without the lock on the person
    and date, both would see two bookings and pass."""
    sessions = [session_on(d) for d in clinic.departments]
    first_account, second_account, third_account = make_account(), make_account(), make_account()
    person = ready_to_book(third_account, clinic.hospital)
    records = {}
    for account in (first_account, second_account):
        ready_to_book(account, clinic.hospital, name="王小明")
        records[account.id] = make_patient(account, name=person.name, relation="parent", id_number=person.id_number)
    confirm(third_account, person, sessions[0])
    confirm(third_account, person, sessions[1])
    first_hold = services.hold_slot(account=first_account, slot_id=sessions[2].slots.get(seq=1).id)
    second_hold = services.hold_slot(account=second_account, slot_id=sessions[3].slots.get(seq=1).id)

    def choose(account, hold):
        return lambda: services.confirm_hold(
            account=account, hold_id=hold.id, patient_id=records[account.id].id, channel="wechat", insurance=False
        )

    out = race(choose(first_account, first_hold), choose(second_account, second_hold), pause_first_after='UPDATE "booking_hold"')

    assert not isinstance(out["first"], Exception), out["first"]
    assert isinstance(out["second"], Conflict) and out["second"].code == "patient_daily_limit", out["second"]
    assert Hold.objects.get(id=second_hold.id).patient_id is None
    assert Hold.objects.filter(patient__id_index=person.id_index).count() == 3
