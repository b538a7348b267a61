"""爽约 and repeated cancels, with the clock moved: a booked registration not checked in by the end
of its session plus the grace period becomes a no-show; three no-shows in 90 days, or three own
cancels in 30 days, ban the real person (whichever account books them) until a day the refusal
names; the ban ends by itself, or earlier when staff lift it."""

from __future__ import annotations

import datetime as dt

import pytest

from guahao import clock
from guahao.booking import services
from guahao.booking.models import Registration
from guahao.booking.states import RegistrationStatus
from guahao.errors import Forbidden
from guahao.notifications.models import OutboxEvent
from guahao.policies.models import Policy, Restriction
from guahao.policies.services import (
    end_restrictions,
    lift_restriction_by_staff,
    mark_no_shows,
)

from .conftest import add_same_person, confirm, registered, session_on


def _events(topic: str) -> list[dict]:
    return list(OutboxEvent.objects.filter(topic=topic).order_by("id").values_list("payload", flat=True))


# --- no-show marking --------------------------------------------------------------------------


def test_a_registration_becomes_a_no_show_only_after_the_grace_period(clinic, booker):
    account, patient = booker
    registration = registered(account, patient, session_on(clinic.departments[0]))
    ends_at = registration.session.ends_at

    with clock.frozen_at(ends_at + dt.timedelta(minutes=29)):
        assert mark_no_shows(now=clock.now()) == 0
    registration.refresh_from_db()
    assert registration.status == RegistrationStatus.BOOKED

    with clock.frozen_at(ends_at + dt.timedelta(minutes=31)):
        assert mark_no_shows(now=clock.now()) == 1
        assert mark_no_shows(now=clock.now()) == 0  # once
    registration.refresh_from_db()
    assert registration.status == RegistrationStatus.NO_SHOW
    assert registration.no_show_at is not None
    assert _events("registration.no_show") == [{"registration_id": registration.id}]
    assert not Restriction.objects.exists()  # one no-show is not yet a ban


def test_the_grace_period_is_the_hospitals(clinic, booker):
    Policy.objects.create(hospital=clinic.hospital, no_show_grace_minutes=60)
    account, patient = booker
    registration = registered(account, patient, session_on(clinic.departments[0]))
    ends_at = registration.session.ends_at

    with clock.frozen_at(ends_at + dt.timedelta(minutes=31)):
        assert mark_no_shows(now=clock.now()) == 0
    with clock.frozen_at(ends_at + dt.timedelta(minutes=61)):
        assert mark_no_shows(now=clock.now()) == 1


def test_checked_in_and_cancelled_registrations_are_never_marked(clinic, booker):
    account, patient = booker
    came = registered(account, patient, session_on(clinic.departments[0]))
    cancelled = registered(account, patient, session_on(clinic.departments[1]))
    services.mark_attendance(registration_id=came.id, status=RegistrationStatus.CHECKED_IN)
    services.cancel_registration(account=account, registration_id=cancelled.id)

    with clock.frozen_at(came.session.ends_at + dt.timedelta(hours=2)):
        assert mark_no_shows(now=clock.now()) == 0

    assert Registration.objects.get(id=came.id).status == RegistrationStatus.CHECKED_IN
    assert Registration.objects.get(id=cancelled.id).status in (RegistrationStatus.REFUNDING, RegistrationStatus.CANCELLED)


# --- the no-show ban ------------------------------------------------------------------------------


def _three_no_shows(clinic, account, patient) -> list[Registration]:
    """Three registrations on the next three days, none attended; the clock left where it was."""
    made = [registered(account, patient, session_on(clinic.departments[0], days_ahead=n)) for n in (1, 2, 3)]
    with clock.frozen_at(made[-1].session.ends_at + dt.timedelta(minutes=31)):
        assert mark_no_shows(now=clock.now()) == 3
    return made


def test_three_no_shows_ban_the_person_for_90_days_then_they_book_again(clinic, booker):
    account, patient = booker
    made = _three_no_shows(clinic, account, patient)
    marked_on = clock.local(made[-1].session.ends_at + dt.timedelta(minutes=31)).date()

    ban = Restriction.objects.get()
    assert (ban.rule, ban.reason, ban.account_id) == (Restriction.Rule.NO_SHOW, "90天内爽约3次", account.id)
    assert ban.until == marked_on + dt.timedelta(days=89)  # 90 days, the day it was made included
    assert _events("restriction.created") == [{"restriction_id": ban.id}]

    with clock.frozen_at(clock.at_local(ban.until, dt.time(9, 0))):  # the last day of the ban
        with pytest.raises(Forbidden) as refused:
            confirm(account, patient, session_on(clinic.departments[1]))
        assert refused.value.code == "patient_restricted_no_show"
        assert refused.value.message == (
            f"就诊人近90天内爽约3次，暂停预约至{ban.until:%Y年%m月%d日}，"
            f"{ban.until + dt.timedelta(days=1):%m月%d日}起可重新预约"
        )
        assert end_restrictions(today=clock.today()) == 0

    with clock.frozen_at(clock.at_local(ban.until + dt.timedelta(days=1), dt.time(0, 5))):
        assert confirm(account, patient, session_on(clinic.departments[1])).patient_id == patient.id
        assert end_restrictions(today=clock.today()) == 1
        assert end_restrictions(today=clock.today()) == 0
    ban.refresh_from_db()
    assert ban.ended_at is not None
    assert _events("restriction.lifted") == [{"restriction_id": ban.id, "by": "expiry"}]


def test_a_no_show_ban_earned_through_one_account_blocks_the_person_in_another(clinic, booker):
    account, patient = booker
    _three_no_shows(clinic, account, patient)
    other_account, family_member = add_same_person(clinic.hospital, patient, relation="parent")

    with pytest.raises(Forbidden) as refused:
        confirm(other_account, family_member, session_on(clinic.departments[2], days_ahead=5))

    assert refused.value.code == "patient_restricted_no_show"
    assert "爽约3次" in refused.value.message


def test_no_shows_older_than_the_window_do_not_count(clinic, booker):
    account, patient = booker
    first = registered(account, patient, session_on(clinic.departments[0]))
    with clock.frozen_at(first.session.ends_at + dt.timedelta(minutes=31)):
        mark_no_shows(now=clock.now())
    with clock.frozen_at(first.session.ends_at + dt.timedelta(days=91)):
        later = [registered(account, patient, session_on(clinic.departments[0], days_ahead=n)) for n in (1, 2)]
        with clock.frozen_at(later[-1].session.ends_at + dt.timedelta(minutes=31)):
            assert mark_no_shows(now=clock.now()) == 2

    assert not Restriction.objects.exists()


def test_a_lifted_ban_is_not_earned_again_by_the_same_no_shows(clinic, booker):
    account, patient = booker
    _three_no_shows(clinic, account, patient)
    ban = Restriction.objects.get()
    lift_restriction_by_staff(restriction_id=ban.id, staff_username="security1", reason="核实为医院原因")
    assert _events("restriction.lifted") == [{"restriction_id": ban.id, "by": "staff"}]

    # One more no-show within the 90 days: three in the window, but only one since the ban.
    fourth = registered(account, patient, session_on(clinic.departments[1], days_ahead=4))
    with clock.frozen_at(fourth.session.ends_at + dt.timedelta(minutes=31)):
        assert mark_no_shows(now=clock.now()) == 1

    assert Restriction.objects.count() == 1
    assert confirm(account, patient, session_on(clinic.departments[2], days_ahead=5)).patient_id == patient.id


def test_no_shows_marked_by_staff_count_too(clinic, booker):
    account, patient = booker
    for n in (1, 2, 3):
        registration = registered(account, patient, session_on(clinic.departments[0], days_ahead=n))
        services.mark_attendance(registration_id=registration.id, status=RegistrationStatus.NO_SHOW)

    assert Restriction.objects.get().rule == Restriction.Rule.NO_SHOW


# --- the cancellation ban -------------------------------------------------------------------------


def _book_and_cancel(clinic, account, patient, times: int) -> None:
    session = session_on(clinic.departments[3], days_ahead=6)
    for _ in range(times):
        registration = registered(account, patient, session, seq=session.slots.filter(state="free").first().seq)
        services.cancel_registration(account=account, registration_id=registration.id)


def test_three_own_cancels_in_30_days_ban_for_30_days_until_staff_lift_it(clinic, booker):
    account, patient = booker
    _book_and_cancel(clinic, account, patient, 2)
    assert not Restriction.objects.exists()
    _book_and_cancel(clinic, account, patient, 1)

    ban = Restriction.objects.get()
    assert (ban.rule, ban.reason, ban.account_id) == (Restriction.Rule.CANCEL, "30天内退号3次", account.id)
    assert ban.until == clock.today() + dt.timedelta(days=29)
    with pytest.raises(Forbidden) as refused:
        confirm(account, patient, session_on(clinic.departments[0]))
    assert refused.value.code == "patient_restricted_cancel"
    assert refused.value.message.startswith(f"就诊人近30天内退号3次，暂停预约至{ban.until:%Y年%m月%d日}")

    lift_restriction_by_staff(restriction_id=ban.id, staff_username="security1", reason="系统故障导致重复退号")
    assert confirm(account, patient, session_on(clinic.departments[0])).patient_id == patient.id


def test_the_cancel_ban_ends_with_its_last_day(clinic, booker):
    account, patient = booker
    _book_and_cancel(clinic, account, patient, 3)
    ban = Restriction.objects.get()

    with clock.frozen_at(clock.at_local(ban.until + dt.timedelta(days=1), dt.time(8, 0))):
        assert confirm(account, patient, session_on(clinic.departments[0])).patient_id == patient.id


def test_cancels_by_staff_do_not_count(clinic, booker):
    account, patient = booker
    session = session_on(clinic.departments[3], days_ahead=6)
    for seq in (1, 2, 3):
        registration = registered(account, patient, session, seq=seq)
        services.cancel_registration_by_staff(registration_id=registration.id, staff_username="ops1", reason="患者电话要求")

    assert not Restriction.objects.exists()
    assert not Registration.objects.filter(cancelled_by_patient=True).exists()
