"""The interleavings found in review, forced with real threads on PostgreSQL: one side pauses
inside its transaction until the other waits on its lock. Each runs ROUNDS times. Whatever the
order, a paid order ends as exactly one registration or one full refund, and no slot is wrong."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading

import pytest

from guahao import clock
from guahao.booking import services
from guahao.booking.models import Hold, Registration
from guahao.booking.states import HoldState, RegistrationStatus
from guahao.errors import Conflict
from guahao.payments import services as payments
from guahao.payments.models import Payment, Refund
from guahao.scheduling.models import Session, Slot
from guahao.scheduling.services import suspend_session
from guahao.testing import make_account, make_session, pay_at_provider, payment_sandbox, run_worker

from .conftest import World, loosen_caps, paid, ready_to_book
from .interleave import race

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

ROUNDS = 20
HOLD_UPDATE = 'UPDATE "booking_hold"'
SLOT_UPDATE = 'UPDATE "scheduling_slot"'
SESSION_UPDATE = 'UPDATE "scheduling_session"'


@pytest.fixture
def rounds(world, booker, simulated_his):
    """A fresh session per round, for the same booker."""
    loosen_caps(world.hospital)

    def make() -> World:
        return dataclasses.replace(
            world,
            session=make_session(world.department, doctor=world.doctor, slots=4, fee_fen=2500),
        )

    return make


def recorded_paid(world: World, booker) -> tuple[Hold, Payment]:
    """Paid at the provider and recorded PAID here (payment.paid written, nothing decided yet)."""
    hold, payment = paid(world, *booker)
    assert payments.refresh_payment(payment_id=payment.id)
    return hold, payment


def settled_once(payment: Payment) -> str:
    """After the worker: the payment is either the winner of a booked registration or refunded in
    full exactly once, never both, never neither."""
    run_worker()
    payment.refresh_from_db()
    registered = Registration.objects.filter(
        hold__payment=payment, status=RegistrationStatus.BOOKED
    ).exists()
    refunds = list(Refund.objects.filter(payment=payment))
    assert registered != bool(refunds), f"registered={registered} refunds={refunds}"
    if refunds:
        assert len(refunds) == 1 and refunds[0].state == Refund.State.SUCCEEDED
        assert payment.refunded_fen == payment.amount_fen
        return "refunded"
    return "registered"


def no_violations() -> None:
    from guahao.ledger import find_violations

    assert find_violations() == []


def test_release_racing_a_payment_keeps_the_release_and_refunds(rounds, booker):
    for _ in range(ROUNDS):
        world = rounds()
        hold, payment = recorded_paid(world, booker)
        out = race(
            lambda h=hold: services.release_hold(account=booker[0], hold_id=h.id),
            lambda p=payment: services.complete_paid_hold(payment_id=p.id),
            pause_first_after=HOLD_UPDATE,
        )
        assert not isinstance(out["first"], Exception), out
        assert out["second"] is None, out
        hold.refresh_from_db()
        assert hold.state == HoldState.RELEASED and hold.payment_id is None
        assert Slot.objects.get(id=hold.slot_id).state == Slot.State.FREE
        assert settled_once(payment) == "refunded"
    no_violations()


def test_a_payment_winning_first_makes_the_racing_release_fail(rounds, booker):
    for _ in range(ROUNDS):
        world = rounds()
        hold, payment = recorded_paid(world, booker)
        out = race(
            lambda p=payment: services.complete_paid_hold(payment_id=p.id),
            lambda h=hold: services.release_hold(account=booker[0], hold_id=h.id),
            pause_first_after=HOLD_UPDATE,
        )
        assert isinstance(out["second"], Conflict), out
        hold.refresh_from_db()
        assert hold.state == HoldState.SUCCEEDED and hold.payment_id == payment.id
        assert settled_once(payment) == "registered"
    no_violations()


def test_two_paid_orders_of_one_hold_one_wins_the_other_is_refunded(rounds, booker):
    for _ in range(ROUNDS):
        world = rounds()
        hold, first = paid(world, *booker)
        # The provider took the money just as we closed the order (its close answered "closed").
        Payment.objects.filter(id=first.id).update(state=Payment.State.CLOSED)
        second, _ = services.pay_hold(account=booker[0], hold_id=hold.id)
        pay_at_provider(second.out_trade_no)
        assert payments.refresh_payment(payment_id=first.id)
        assert payments.refresh_payment(payment_id=second.id)
        out = race(
            lambda p=first: services.complete_paid_hold(payment_id=p.id),
            lambda p=second: services.complete_paid_hold(payment_id=p.id),
            pause_first_after=HOLD_UPDATE,
        )
        assert out == {"first": None, "second": None}, out
        hold.refresh_from_db()
        assert hold.payment_id == first.id
        assert settled_once(first) == "registered"
        assert settled_once(second) == "refunded"
        assert Registration.objects.filter(hold=hold).count() == 1
    no_violations()


@pytest.fixture
def thread_clock(monkeypatch):
    """Each thread may see its own time (offset), as two requests either side of an expiry do."""
    local = threading.local()
    real_now = clock.now
    monkeypatch.setattr(
        clock, "now", lambda: real_now() + getattr(local, "offset", dt.timedelta(0))
    )

    def at(moment: dt.datetime) -> None:
        local.offset = moment - real_now()

    return at


def test_a_payment_at_the_expiry_boundary_and_the_next_claimant_never_deadlock(
    rounds, booker, thread_clock
):
    other = make_account()
    for i in range(ROUNDS):
        world = rounds()
        if i == 0:
            ready_to_book(other, world.hospital, name="李四")
        hold, payment = recorded_paid(world, booker)
        expiry = hold.expires_at

        def claim(h=hold, e=expiry):
            thread_clock(e + dt.timedelta(seconds=1))
            return services.hold_slot(account=other, slot_id=h.slot_id)

        def pay(p=payment, e=expiry):
            thread_clock(e - dt.timedelta(seconds=1))
            return services.complete_paid_hold(payment_id=p.id)

        # Both orders: the claimant inside its claim while the payment lands, and the reverse.
        first, second, head = (claim, pay, SLOT_UPDATE) if i % 2 == 0 else (pay, claim, HOLD_UPDATE)
        out = race(first, second, pause_first_after=head)
        assert not any("deadlock" in str(v).lower() for v in out.values()), out
        taken = out["first"] if first is claim else out["second"]
        with clock.travel(dt.timedelta(minutes=15)):  # the worker runs after both sides' moments
            outcome = settled_once(payment)
        if isinstance(taken, Hold):
            assert outcome == "refunded"
            assert Hold.objects.get(id=taken.id).state == HoldState.HELD
            assert Hold.objects.get(id=hold.id).state == HoldState.EXPIRED
        else:
            assert isinstance(taken, Conflict) and taken.code == "slot_taken", out
            assert outcome == "registered"


def test_suspension_racing_a_payment_never_leaves_a_registration_on_the_suspended_session(
    rounds, booker
):
    for i in range(ROUNDS):
        world = rounds()
        hold, payment = recorded_paid(world, booker)
        session = Session.objects.get(id=world.session.id)
        suspend = lambda s=session: suspend_session(session=s, reason="专家外出会诊")  # noqa: E731
        complete = lambda p=payment: services.complete_paid_hold(payment_id=p.id)  # noqa: E731
        if i % 2 == 0:
            out = race(suspend, complete, pause_first_after=SESSION_UPDATE)
        else:
            out = race(complete, suspend, pause_first_after=HOLD_UPDATE)
        assert not [v for v in out.values() if isinstance(v, Exception)], out
        assert settled_once(payment) == "refunded"
        assert not Registration.objects.filter(
            session=session, status__in=["booked", "checked_in"]
        ).exists()
    no_violations()


def test_a_double_tap_on_pay_never_opens_two_payable_orders(rounds, booker):
    from .conftest import confirmed

    for i in range(ROUNDS):
        world = rounds()
        hold = confirmed(world, *booker)
        pay = lambda h=hold: services.pay_hold(account=booker[0], hold_id=h.id)  # noqa: E731
        if i % 2 == 0:
            out = race(pay, pay, pause_first_after='INSERT INTO "payments_payment"')
        else:  # the second tap lands after the first order is open: it replaces it
            out = {"first": pay(), "second": _swallow_conflict(pay)}
        opened = [v for v in out.values() if isinstance(v, tuple)]
        refused = [v for v in out.values() if isinstance(v, Conflict)]
        assert len(opened) + len(refused) == 2, out
        assert all(e.code == "payment_in_progress" for e in refused), out
        orders = Payment.objects.filter(hold=hold)
        assert orders.filter(state=Payment.State.CREATED).count() == 1
        # Nothing is payable at the provider but the one open order.
        at_provider = [
            payment_sandbox().trade(no) for no in orders.values_list("out_trade_no", flat=True)
        ]
        open_at_provider = {
            t.out_trade_no for t in at_provider if t is not None and t.state == "NOTPAY"
        }
        assert open_at_provider == {orders.get(state=Payment.State.CREATED).out_trade_no}


def _swallow_conflict(call):
    try:
        return call()
    except Conflict as exc:
        return exc
