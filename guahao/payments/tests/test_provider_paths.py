"""Money paths of the issue's acceptance, through both providers' real protocols (the sandbox
gateway): an order is paid even when every notification is lost; money arriving after the hold's
expiry is refunded exactly once however the news arrives; a refund whose calls keep timing out is
still one refund at the provider; refunds never exceed what was paid; the sandbox's merchant exists
in development only."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import IntegrityError, transaction
from django.db.models import F

from guahao import clock
from guahao.booking import services as booking
from guahao.booking.models import Hold, Registration
from guahao.booking.states import RegistrationStatus
from guahao.booking.tests import conftest as booking_fixtures
from guahao.errors import Conflict
from guahao.ledger import find_violations
from guahao.notifications.models import OutboxEvent
from guahao.payments import services
from guahao.payments.models import Payment, Refund
from guahao.payments.providers import for_payment
from guahao.payments.providers.base import ProviderRefused
from guahao.payments.tests.helpers import (
    accepted,
    deliver,
    make_hold,
    paid_payment,
    pay,
    run_worker_without_notifications,
    start,
    trade_delivery,
)
from guahao.testing import (
    api_client,
    client_send,
    open_pay_page,
    pay_at_provider,
    payment_sandbox,
    run_concurrently,
    run_worker,
)

world = booking_fixtures.world
booker = booking_fixtures.booker

REFUND_CALL = {"wechatpay": "wechat.refund", "alipay": "alipay.trade.refund"}
REFUND_QUERY_CALL = {
    "wechatpay": "wechat.refund_query",
    "alipay": "alipay.trade.fastpay.refund.query",
}


def paying(world, booker, channel: str) -> tuple[Hold, Payment]:
    """The patient holds the first number, confirms, and opens the provider's pay page."""
    account, patient = booker
    hold = booking.hold_slot(
        account=account, slot_id=world.session.slots.order_by("seq").first().id
    )
    booking.confirm_hold(
        account=account, hold_id=hold.id, patient_id=patient.id, channel=channel, insurance=False
    )
    payment, params = booking.pay_hold(account=account, hold_id=hold.id)
    if payment.provider == "alipay":
        assert open_pay_page(params.pay_url) == 200
    payment.refresh_from_db()
    hold.refresh_from_db()
    return hold, payment


def assert_refunded_once(payment: Payment) -> Refund:
    """The payment was refunded in full exactly once, here and at the provider, under the refund
    number derived from the order number."""
    payment.refresh_from_db()
    (refund,) = Refund.objects.filter(payment=payment)
    assert refund.refund_no == f"RF{payment.out_trade_no}"
    assert refund.state == Refund.State.SUCCEEDED
    assert payment.state == Payment.State.PAID and payment.refunded_fen == payment.amount_fen
    assert [
        (r.out_refund_no, r.amount_fen, r.state)
        for r in payment_sandbox().refunds(payment.out_trade_no)
    ] == [(refund.refund_no, payment.amount_fen, "SUCCESS")]
    assert (
        OutboxEvent.objects.filter(topic="payment.paid", payload={"payment_id": payment.id}).count()
        == 1
    )
    assert (
        OutboxEvent.objects.filter(topic="refund.succeeded", payload__refund_id=refund.id).count()
        == 1
    )
    return refund


# --- every notification dropped: the poller ------------------------------------------------------


@pytest.mark.django_db
def test_an_order_whose_notifications_never_arrive_is_paid_through_the_poller_before_the_hold_expires(
    world, booker, channel
):
    hold, payment = paying(world, booker, channel)
    pays_at = hold.expires_at - dt.timedelta(seconds=25)  # late in the lock, between two polls
    moment, paid = payment.opened_at, False
    # The worker runs every five seconds; the provider's notifications never reach us.
    while moment < hold.expires_at and not Registration.objects.filter(hold=hold).exists():
        moment += dt.timedelta(seconds=5)
        with clock.frozen_at(moment):
            if not paid and moment >= pays_at:
                pay_at_provider(payment.out_trade_no)
                paid = True
            run_worker_without_notifications()

    registration = Registration.objects.get(hold=hold)
    payment.refresh_from_db()
    assert registration.status == RegistrationStatus.BOOKED
    # paid_at is the provider's moment of payment, which it states to the second.
    assert pays_at - dt.timedelta(seconds=1) < payment.paid_at < hold.expires_at
    assert not Refund.objects.filter(payment=payment).exists()
    delivery = trade_delivery(payment)
    assert (delivery.attempts, delivery.delivered_at) == (0, None)
    assert find_violations() == []


# --- paid after the hold's expiry: refunded exactly once ------------------------------------------


def pay_after_the_holds_expiry(hold: Hold, payment: Payment):
    """The patient pays once the hold has lapsed but before the order's own expiry (the hold's
    plus ORDER_MARGIN), which the provider still accepts; the worker has not closed it yet."""
    assert payment.expires_at == hold.expires_at + services.ORDER_MARGIN
    return pay(payment)


@pytest.mark.django_db
@pytest.mark.parametrize("first", ["notification", "poller", "patient"])
def test_payment_after_the_holds_expiry_is_refunded_once(world, booker, channel, first):
    hold, payment = paying(world, booker, channel)
    with clock.frozen_at(hold.expires_at + dt.timedelta(minutes=1)):
        delivery = pay_after_the_holds_expiry(hold, payment)
        news = {
            "notification": lambda: accepted(payment.provider, deliver(delivery)),
            "poller": services.poll_open_payments,
            "patient": lambda: (
                api_client(hold.account).post(f"/api/v1/holds/{hold.id}/pay/check").status_code
                == 200
            ),
        }
        assert news.pop(first)()
        for other in news.values():
            other()
        run_worker()

    assert not Registration.objects.filter(hold=hold).exists()
    refund = assert_refunded_once(payment)
    assert refund.reason == "锁号已超时，自动退款"
    assert find_violations() == []


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_payment_after_the_holds_expiry_racing_notifications_poller_and_worker_is_refunded_once(
    world, booker, channel
):
    hold, payment = paying(world, booker, channel)
    with clock.frozen_at(hold.expires_at + dt.timedelta(minutes=1)):
        delivery = pay_after_the_holds_expiry(hold, payment)
        signed = []
        for second in range(3):  # the provider's tries, each signed at its own moment
            with clock.travel(dt.timedelta(seconds=second)):
                signed.append(delivery.signed())
        patient = api_client(hold.account)
        results = run_concurrently(
            [
                *[lambda s=s: client_send(*s) for s in signed],
                services.poll_open_payments,
                services.poll_open_payments,
                lambda: booking.check_payment(account=hold.account, hold_id=hold.id),
                lambda: patient.post(f"/api/v1/holds/{hold.id}/pay/check").status_code,
                lambda: booking.expire_holds(),
            ]
        )
        assert all(ok for ok, _ in results), results
        assert all(accepted(payment.provider, reply) for _, reply in results[:3])
        run_worker()

    assert not Registration.objects.filter(hold=hold).exists()
    assert_refunded_once(payment)
    assert find_violations() == []


# --- a refund whose calls time out ----------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("fault", ["lost_reply", "drop"])
def test_a_refund_whose_calls_time_out_five_times_is_one_refund_at_the_provider(
    world, booker, channel, fault, provider_faults
):
    """With lost_reply the provider refunds but its answer never comes back; with drop the request
    never arrives. The line to the provider is that bad for a while, its queries and notifications
    lost too: the refund is sent again and again under the same number, and is one refund in the end."""
    account, _patient = booker
    hold, payment = paying(world, booker, channel)
    pay_at_provider(payment.out_trade_no)
    run_worker()
    registration = Registration.objects.get(hold=hold)
    gateway = payment_sandbox()
    gateway.fault(REFUND_CALL[payment.provider], fault, times=5)
    gateway.fault(REFUND_QUERY_CALL[payment.provider], fault, times=5)

    booking.cancel_registration(account=account, registration_id=registration.id)
    refund = Refund.objects.get(payment=payment)
    for minute in range(1, 180):
        with clock.travel(dt.timedelta(minutes=minute)):
            run_worker_without_notifications()
        assert len(gateway.refunds(payment.out_trade_no)) <= 1  # never a second refund meanwhile
        refund.refresh_from_db()
        if refund.state == Refund.State.SUCCEEDED:
            break
    with clock.travel(dt.timedelta(minutes=minute)):
        run_worker()  # the line is back: the provider's late notifications change nothing

    assert assert_refunded_once(payment).pk == refund.pk
    registration.refresh_from_db()
    assert registration.status == RegistrationStatus.CANCELLED
    refund_calls = [
        outcome for operation, outcome in provider_faults.calls if operation == "refund"
    ]
    assert refund_calls[:5] == ["timeout"] * 5
    assert find_violations() == []


# --- refunds never exceed what was paid -----------------------------------------------------------


@pytest.mark.django_db
def test_refunds_never_exceed_what_was_paid(channel, booking_calls):
    payment = paid_payment(make_hold(channel))
    number = f"RF{payment.out_trade_no}"
    services.submit_refund(
        refund_id=services.request_refund(
            payment=payment, amount_fen=600, reason="部分退款", refund_no=f"{number}-1"
        ).id
    )
    for amount in (500, 1001):
        with pytest.raises(Conflict) as caught:
            services.request_refund(
                payment=payment, amount_fen=amount, reason="再退", refund_no=f"{number}-x{amount}"
            )
        assert caught.value.code == "refund_exceeds_paid"
    services.submit_refund(
        refund_id=services.request_refund(
            payment=payment, amount_fen=400, reason="余额", refund_no=f"{number}-2"
        ).id
    )
    with pytest.raises(Conflict):
        services.request_refund(
            payment=payment, amount_fen=1, reason="再退一分", refund_no=f"{number}-3"
        )
    run_worker()
    payment.refresh_from_db()
    assert payment.refunded_fen == payment.amount_fen == 1000
    assert sum(r.amount_fen for r in payment_sandbox().refunds(payment.out_trade_no)) == 1000

    # The provider refuses more than the order too, and so does the database.
    with pytest.raises(ProviderRefused):
        for_payment(payment).refund(
            out_trade_no=payment.out_trade_no,
            out_refund_no=f"{number}-4",
            amount_fen=1,
            total_fen=1000,
            reason="x",
        )
    with pytest.raises(IntegrityError), transaction.atomic():
        Payment.objects.filter(id=payment.id).update(refunded_fen=F("refunded_fen") + 1)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_refunds_of_one_payment_never_exceed_it(channel, booking_calls):
    payment = paid_payment(make_hold(channel))
    results = run_concurrently(
        [
            lambda n=n: services.request_refund(
                payment=payment,
                amount_fen=600,
                reason="并发退款",
                refund_no=f"RF{payment.out_trade_no}-{n}",
            )
            for n in range(10)
        ]
    )
    created = [r for ok, r in results if ok]
    refused = [r for ok, r in results if not ok]
    assert len(created) == 1
    assert all(isinstance(r, Conflict) and r.code == "refund_exceeds_paid" for r in refused)
    assert Refund.objects.filter(payment=payment).count() == 1


# --- the sandbox's merchant is for development only -----------------------------------------------


@pytest.mark.django_db
def test_the_sandbox_merchant_is_refused_outside_development(channel, settings, booking_calls):
    payment, _ = start(make_hold(channel))
    delivery = pay(payment)
    settings.ENV = "production"

    assert client_send(*delivery.signed()) == (404, b"unknown merchant")
    payment.refresh_from_db()
    assert payment.state == Payment.State.CREATED
    with pytest.raises(Conflict) as caught:
        services.start_payment(hold=make_hold(channel))
    assert caught.value.code == "channel_unavailable"
    assert caught.value.message == "该支付方式暂不可用，请选择其他支付方式"
