import datetime as dt

import pytest

from guahao import clock
from guahao.booking import services
from guahao.booking.models import Hold
from guahao.booking.states import HoldState
from guahao.errors import Conflict, Forbidden, NotFound
from guahao.scheduling.models import ReleaseRule, Slot
from guahao.testing import make_account

from .conftest import ready_to_book


def test_holding_a_taken_slot_is_refused_without_a_second_hold(world, booker):
    slot = world.session.slots.first()
    services.hold_slot(account=booker[0], slot_id=slot.id)
    with pytest.raises(Conflict) as err:
        services.hold_slot(account=make_account(), slot_id=slot.id)
    assert err.value.code == "slot_taken"
    assert Hold.objects.filter(slot=slot).count() == 1


def test_an_expired_holds_slot_can_be_held_again_at_once(world, booker):
    slot = world.session.slots.first()
    first = services.hold_slot(account=booker[0], slot_id=slot.id)
    with clock.travel(dt.timedelta(minutes=10, seconds=1)):
        second = services.hold_slot(account=make_account(), slot_id=slot.id)
        first.refresh_from_db()
        assert first.state == HoldState.EXPIRED
        assert second.state == HoldState.HELD


def test_next_free_in_window_takes_the_lowest_free_number(world, booker):
    session = world.session
    first_window = session.slots.order_by("seq").first().window_start
    hold = services.hold_slot(account=booker[0], session_id=session.id, window_start=first_window)
    assert hold.slot.seq == 1


def test_window_full_is_refused(world):
    from guahao.testing import make_session

    session = make_session(world.department, slots=2, per_window=2)
    window = session.slots.first().window_start
    services.hold_slot(account=make_account(), session_id=session.id, window_start=window)
    services.hold_slot(account=make_account(), session_id=session.id, window_start=window)
    with pytest.raises(Conflict) as err:
        services.hold_slot(account=make_account(), session_id=session.id, window_start=window)
    assert err.value.code == "window_full"


def test_live_hold_cap_per_account(world, booker):
    ReleaseRule.objects.filter(hospital=world.hospital).update(max_live_holds_per_account=1)
    slots = list(world.session.slots.order_by("seq"))
    services.hold_slot(account=booker[0], slot_id=slots[0].id)
    with pytest.raises(Conflict) as err:
        services.hold_slot(account=booker[0], slot_id=slots[1].id)
    assert err.value.code == "live_hold_limit"
    # The refused attempt left its slot free for others.
    assert Slot.objects.get(id=slots[1].id).state == Slot.State.FREE


def test_daily_hold_cap_counts_released_holds_too(world, booker):
    ReleaseRule.objects.filter(hospital=world.hospital).update(max_holds_per_day_per_account=2)
    slot = world.session.slots.first()
    for _ in range(2):
        hold = services.hold_slot(account=booker[0], slot_id=slot.id)
        services.release_hold(account=booker[0], hold_id=hold.id)
    with pytest.raises(Conflict) as err:
        services.hold_slot(account=booker[0], slot_id=slot.id)
    assert err.value.code == "daily_hold_limit"


def test_released_hold_frees_the_slot(world, booker):
    slot = world.session.slots.first()
    hold = services.hold_slot(account=booker[0], slot_id=slot.id)
    services.release_hold(account=booker[0], hold_id=hold.id)
    assert Slot.objects.get(id=slot.id).state == Slot.State.FREE
    assert services.hold_slot(account=make_account(), slot_id=slot.id).state == HoldState.HELD


def test_confirm_requires_the_current_notice(world):
    from guahao.testing import make_patient

    account = make_account()
    patient = make_patient(account)
    hold = services.hold_slot(account=account, slot_id=world.session.slots.first().id)
    with pytest.raises(Conflict) as err:
        services.confirm_hold(account=account, hold_id=hold.id, patient_id=patient.id, channel="wechat", insurance=False)
    assert err.value.code == "notice_not_acknowledged"
    assert "挂号须知" in err.value.message


def test_confirm_refuses_another_accounts_patient_as_not_found(world, booker):
    other = make_account()
    strangers_patient = ready_to_book(other, world.hospital, name="王五")
    hold = services.hold_slot(account=booker[0], slot_id=world.session.slots.first().id)
    with pytest.raises(NotFound):
        services.confirm_hold(
            account=booker[0], hold_id=hold.id, patient_id=strangers_patient.id, channel="wechat", insurance=False
        )


def test_a_restricted_patient_cannot_book(world, booker):
    from guahao.policies.models import Restriction

    account, patient = booker
    Restriction.objects.create(
        hospital=world.hospital,
        patient_index=patient.id_index,
        reason="爽约3次",
        until=clock.today() + dt.timedelta(days=30),
        created_at=clock.now(),
    )
    hold = services.hold_slot(account=account, slot_id=world.session.slots.first().id)
    with pytest.raises(Forbidden) as err:
        services.confirm_hold(account=account, hold_id=hold.id, patient_id=patient.id, channel="wechat", insurance=False)
    assert err.value.code == "patient_restricted"
    assert "爽约3次" in err.value.message


def test_confirm_after_expiry_is_refused(world, booker):
    account, patient = booker
    hold = services.hold_slot(account=account, slot_id=world.session.slots.first().id)
    with clock.travel(dt.timedelta(minutes=11)), pytest.raises(Conflict) as err:
        services.confirm_hold(account=account, hold_id=hold.id, patient_id=patient.id, channel="wechat", insurance=False)
    assert err.value.code == "hold_expired"


def test_sweeper_marks_lapsed_holds_expired_and_frees_slots(world, booker):
    slot = world.session.slots.first()
    hold = services.hold_slot(account=booker[0], slot_id=slot.id)
    with clock.travel(dt.timedelta(minutes=11)):
        assert services.expire_holds() == 1
        assert services.expire_holds() == 0
    hold.refresh_from_db()
    assert hold.state == HoldState.EXPIRED
    assert Slot.objects.get(id=slot.id).state == Slot.State.FREE


def test_next_free_in_window_takes_a_lapsed_claim_too(world):
    from guahao.testing import make_session

    session = make_session(world.department, slots=1, per_window=1)
    window = session.slots.get().window_start
    first = services.hold_slot(account=make_account(), session_id=session.id, window_start=window)
    with clock.travel(dt.timedelta(minutes=10, seconds=1)):
        second = services.hold_slot(account=make_account(), session_id=session.id, window_start=window)
    assert second.slot_id == first.slot_id


def test_a_window_the_session_does_not_have_is_not_found(world, booker):
    window = world.session.starts_at + dt.timedelta(minutes=7)
    with pytest.raises(NotFound) as err:
        services.hold_slot(account=booker[0], session_id=world.session.id, window_start=window)
    assert err.value.code == "window_not_found"
