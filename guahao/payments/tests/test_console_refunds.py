"""The console's queue of refunds the provider refused: retried under the same refund number, or
closed as paid back another way (counted exactly like a succeeded refund), each audited; the books
in 元; and the ledger-check findings as a page for finance."""

from __future__ import annotations

import pytest
from django.db import transaction
from django.test import Client

from guahao.booking import services as booking
from guahao.booking.models import Registration
from guahao.booking.selectors import refund_of
from guahao.booking.states import RegistrationStatus
from guahao.booking.tests import conftest as booking_fixtures
from guahao.console import roles
from guahao.console.models import AuditEntry
from guahao.console.testing import console_client, make_staff
from guahao.ledger import find_violations
from guahao.notifications.messaging import messages_for
from guahao.payments import services
from guahao.payments.models import Payment, Refund
from guahao.payments.providers.base import RefundStatus
from guahao.testing import make_hospital, payment_sandbox, run_worker
from guahao.tests.test_http_hardening import inline_code

world = booking_fixtures.world
booker = booking_fixtures.booker

pytestmark = pytest.mark.django_db

REFUNDS = "/admin/payments/refund/"
LEDGER = "/admin/payments/payment/ledger/"


@pytest.fixture
def failed(world, booker, provider_faults) -> Refund:
    """A registration the patient cancelled whose refund the provider refused (the merchant
    account was empty)."""
    account, patient = booker
    registration = booking_fixtures.registered(account, patient, world.session)
    provider_faults.fail_next("refund", "refuse")
    booking.cancel_registration(account=account, registration_id=registration.id)
    refund = Refund.objects.get(payment=registration.hold.payment)
    assert refund.state == Refund.State.FAILED
    provider_faults.clear()  # topped up again
    return refund


def provider_refunds(refund: Refund) -> list[tuple[str, int]]:
    return [
        (r.out_refund_no, r.amount_fen)
        for r in payment_sandbox().refunds(refund.payment.out_trade_no)
    ]


def finance(world) -> tuple[Client, object]:
    user = make_staff(role=roles.FINANCE, hospitals=[world.hospital])
    return console_client(user), user


def registration_of(refund: Refund) -> Registration:
    return Registration.objects.get(hold__payment=refund.payment)


def test_the_refund_list_opens_on_the_failed_queue(world, failed):
    client, _ = finance(world)
    response = client.get(REFUNDS)
    assert [r.pk for r in response.context["cl"].result_list] == [failed.pk]
    html = response.content.decode()
    assert "按原退款单号重试" in html and "标记为已通过其他方式退回" in html
    assert "25.00 元" in html and "refund: refused" in html
    assert client.get(REFUNDS, {"state": "succeeded"}).context["cl"].result_count == 0


def test_a_failed_refund_is_retried_under_its_own_number_and_audited(world, failed):
    client, user = finance(world)

    response = client.post(REFUNDS, {"action": "retry_failed", "_selected_action": [failed.pk]})
    assert response.status_code == 302
    run_worker()

    failed.refresh_from_db()
    payment = Payment.objects.get(pk=failed.payment_id)
    assert failed.state == Refund.State.SUCCEEDED
    assert list(Refund.objects.filter(payment=payment).values_list("refund_no", flat=True)) == [
        failed.refund_no
    ]
    assert payment.refunded_fen == payment.amount_fen == 2500
    assert registration_of(failed).status == RegistrationStatus.CANCELLED
    assert provider_refunds(failed) == [(failed.refund_no, 2500)]
    entry = AuditEntry.objects.get(action=AuditEntry.Action.REFUND_RETRY)
    assert (entry.staff_username, entry.result, entry.object_id) == (
        user.username,
        "success",
        str(failed.pk),
    )
    assert entry.hospital_id == world.hospital.pk
    assert find_violations() == []


def test_a_retry_refused_again_stays_in_the_queue_and_is_audited_as_failed(
    world, failed, provider_faults
):
    provider_faults.fail_next("refund", "refuse")
    client, _ = finance(world)
    response = client.post(
        REFUNDS, {"action": "retry_failed", "_selected_action": [failed.pk]}, follow=True
    )
    assert "重试后仍为退款失败" in response.content.decode()
    failed.refresh_from_db()
    assert failed.state == Refund.State.FAILED
    assert (
        AuditEntry.objects.get(action=AuditEntry.Action.REFUND_RETRY).result
        == AuditEntry.Result.FAILURE
    )


def test_a_failed_refund_paid_back_by_hand_counts_as_refunded_once(world, failed):
    client, user = finance(world)
    chosen = {"action": "mark_paid_back_by_hand", "_selected_action": [failed.pk]}

    confirm = client.post(REFUNDS, chosen)
    assert confirm.status_code == 200 and failed.refund_no in confirm.content.decode()
    assert inline_code(confirm.content.decode()) == []
    empty = client.post(REFUNDS, {**chosen, "apply": "yes", "note": "  "})
    assert "请填写退回方式与说明" in empty.content.decode()
    failed.refresh_from_db()
    assert failed.state == Refund.State.FAILED

    done = client.post(
        REFUNDS, {**chosen, "apply": "yes", "note": "门诊收费窗口现金退还，收据 0012"}
    )
    assert done.status_code == 302

    failed.refresh_from_db()
    payment = Payment.objects.get(pk=failed.payment_id)
    registration = registration_of(failed)
    assert failed.state == Refund.State.MANUAL and failed.succeeded_at is not None
    assert (failed.handled_by, failed.handled_note) == (
        user.username,
        "门诊收费窗口现金退还，收据 0012",
    )
    assert (
        provider_refunds(failed) == []
    )  # the provider never paid it: the patient got the money once
    assert payment.refunded_fen == payment.amount_fen == 2500
    assert registration.status == RegistrationStatus.CANCELLED
    assert refund_of(registration).state_label == "已线下退款"
    entry = AuditEntry.objects.get(action=AuditEntry.Action.REFUND_MANUAL)
    assert (entry.staff_username, entry.result, entry.after) == (
        user.username,
        "success",
        {"state": "manual"},
    )
    (message,) = messages_for("registration.cancelled", {"registration_id": registration.id, "refund_id": failed.id})
    text = message.text
    assert text.endswith("挂号已取消，挂号费已由医院通过其他方式退还。")
    run_worker()  # the refund.succeeded event finds nothing left to do
    assert find_violations() == []

    # Once only: a second mark is refused, and the money is not counted twice.
    again = client.post(
        f"{REFUNDS}?state=all", {**chosen, "apply": "yes", "note": "再次标记"}, follow=True
    )
    assert "只有退款失败的退款单可以标记为已线下退款" in again.content.decode()
    payment.refresh_from_db()
    assert payment.refunded_fen == 2500
    assert AuditEntry.objects.filter(action="refund_manual", result="failure").count() == 1
    with pytest.raises(Exception, match="退款金额超过可退金额|退款单号已用于另一笔退款"):
        services.request_refund(payment=payment, amount_fen=1, reason="x", refund_no="RF-another")


def test_ledger_check_flags_what_is_wrong_with_a_manual_refund(world, failed):
    booking.record_manual_refund(
        refund_no=failed.refund_no, staff_username="cashier", note="现金退还"
    )
    assert find_violations() == []

    Refund.objects.filter(pk=failed.pk).update(handled_note="")
    Payment.objects.filter(pk=failed.payment_id).update(refunded_fen=0)
    kinds = {v.kind for v in find_violations()}
    assert {"refund_manual_unexplained", "payment_refunded_mismatch"} <= kinds
    Refund.objects.filter(pk=failed.pk).update(handled_note="现金退还")
    Payment.objects.filter(pk=failed.payment_id).update(refunded_fen=2500)


def test_the_ledger_page_lists_findings_of_the_staffs_hospitals_with_links(world, failed):
    client, _ = finance(world)
    response = client.get(LEDGER)
    html = response.content.decode()
    assert response.status_code == 200
    assert "退款失败，待人工处理" in html and f"{REFUNDS}{failed.pk}/change/" in html

    elsewhere = make_staff(role=roles.FINANCE, hospitals=[make_hospital()])
    html = console_client(elsewhere).get(LEDGER).content.decode()
    assert "退款失败，待人工处理" not in html and "账务核对未发现问题" in html
    booking.record_manual_refund(
        refund_no=failed.refund_no, staff_username="cashier", note="现金退还"
    )


def test_operations_staff_reach_neither_the_refund_queue_nor_the_ledger(world, failed):
    user = make_staff(role=roles.OPERATIONS, hospitals=[world.hospital])
    client = console_client(user)
    assert client.get(REFUNDS).status_code == 403
    chosen = {
        "action": "mark_paid_back_by_hand",
        "_selected_action": [failed.pk],
        "apply": "yes",
        "note": "x",
    }
    assert client.post(REFUNDS, chosen).status_code == 403
    assert client.get(LEDGER).status_code == 403
    failed.refresh_from_db()
    assert failed.state == Refund.State.FAILED
    booking.record_manual_refund(
        refund_no=failed.refund_no, staff_username="cashier", note="现金退还"
    )


def test_the_payment_list_shows_money_in_yuan_channels_and_refund_state_in_chinese(world, failed):
    booking.record_manual_refund(
        refund_no=failed.refund_no, staff_username="cashier", note="现金退还"
    )
    client, _ = finance(world)
    html = client.get("/admin/payments/payment/").content.decode()
    assert "25.00 元" in html and "微信支付" in html and "已退款" in html
    assert "退款失败待处理" in html and "账务核对" in html


def succeeded_after_all(failed: Refund):
    """The provider's answer when the refund it had refused went through after all."""
    return lambda: RefundStatus(failed.refund_no, "SUCCESS", failed.amount_fen)


def test_a_refund_that_succeeded_at_the_provider_after_all_is_not_paid_back_by_hand(
    world, failed, provider_faults
):
    provider_faults.answers["query_refund"] = succeeded_after_all(failed)
    from guahao.errors import Conflict

    with pytest.raises(Conflict, match="已经成功"):
        services.mark_refund_manual(
            refund_no=failed.refund_no, staff_username="finance", note="现金退还"
        )
    failed.refresh_from_db()
    payment = Payment.objects.get(pk=failed.payment_id)
    assert failed.state == Refund.State.SUCCEEDED and payment.refunded_fen == payment.amount_fen
    run_worker()


@pytest.mark.parametrize("fault", ["drop", "error"])
def test_an_unknown_provider_answer_stops_the_manual_mark(world, failed, fault):
    from guahao.errors import Conflict

    payment_sandbox().fault("wechat.refund_query", fault)
    with pytest.raises(Conflict, match="稍后重试"):
        services.mark_refund_manual(
            refund_no=failed.refund_no, staff_username="finance", note="现金退还"
        )
    failed.refresh_from_db()
    assert failed.state == Refund.State.FAILED


@pytest.mark.leaves_ledger_finding
def test_a_provider_refund_after_a_manual_one_is_named_by_ledger_check(world, failed):
    services.mark_refund_manual(
        refund_no=failed.refund_no, staff_username="finance", note="现金退还"
    )
    with transaction.atomic():
        services._settle_refund(refund_id=failed.id)  # the provider's REFUND.SUCCESS, late
    payment = Payment.objects.get(pk=failed.payment_id)
    assert payment.refunded_fen == payment.amount_fen  # counted once
    assert [v.kind for v in find_violations()] == ["refund_paid_twice"]


def test_the_console_asks_the_provider_before_the_manual_mark_too(world, failed, provider_faults):
    from guahao.booking.services import staff
    from guahao.errors import Conflict

    provider_faults.answers["query_refund"] = succeeded_after_all(failed)
    with pytest.raises(Conflict, match="已经成功"):
        staff.record_manual_refund(
            refund_no=failed.refund_no, staff_username="finance", note="现金退还"
        )
    failed.refresh_from_db()
    assert failed.state == Refund.State.SUCCEEDED
    run_worker()
    assert registration_of(failed).status == RegistrationStatus.CANCELLED
