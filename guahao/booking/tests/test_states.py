import pytest

from guahao.booking.states import (
    HOLD_TRANSITIONS,
    HoldState,
    RegistrationStatus,
    check_hold_move,
    check_registration_move,
)
from guahao.errors import Conflict


def test_a_succeeded_hold_never_moves_again():
    for target in HoldState:
        with pytest.raises(Conflict):
            check_hold_move(HoldState.SUCCEEDED, target)


def test_only_a_registering_hold_can_succeed():
    allowed = {s for s, targets in HOLD_TRANSITIONS.items() if HoldState.SUCCEEDED in targets}
    assert allowed == {HoldState.REGISTERING}


def test_a_paying_hold_can_pay_again_or_expire():
    check_hold_move(HoldState.PAYING, HoldState.PAYING)
    check_hold_move(HoldState.PAYING, HoldState.EXPIRED)


def test_cancel_goes_through_refunding():
    check_registration_move(RegistrationStatus.BOOKED, RegistrationStatus.REFUNDING)
    check_registration_move(RegistrationStatus.REFUNDING, RegistrationStatus.CANCELLED)
    with pytest.raises(Conflict) as err:
        check_registration_move(RegistrationStatus.BOOKED, RegistrationStatus.CANCELLED)
    assert "预约成功" in err.value.message


def test_a_visited_registration_cannot_be_cancelled():
    with pytest.raises(Conflict):
        check_registration_move(RegistrationStatus.VISITED, RegistrationStatus.REFUNDING)
