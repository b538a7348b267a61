"""Reads of payments and refunds."""

from __future__ import annotations

from django.db.models import QuerySet, Sum

from guahao.payments.models import Payment, Refund


def payments_of_hold(hold_id: int) -> QuerySet[Payment]:
    """Every payment order opened for a hold, oldest first."""
    return Payment.objects.filter(hold_id=hold_id).order_by("id")


def paid_total(payment: Payment) -> int:
    """Fen the patient has paid for this order and not (yet) been refunded: amount − refunded for a
    paid order, 0 for one never paid."""
    if payment.state != Payment.State.PAID:
        return 0
    return payment.amount_fen - payment.refunded_fen


def refundable_fen(payment: Payment) -> int:
    """Fen that may still be refunded: the amount paid less every refund not failed (in progress
    ones and those paid back another way included, so refunds can never together exceed what was
    paid)."""
    if payment.state != Payment.State.PAID:
        return 0
    committed = (
        Refund.objects.filter(
            payment_id=payment.id, state__in=[Refund.State.PROCESSING, Refund.State.SUCCEEDED, Refund.State.MANUAL]
        ).aggregate(total=Sum("amount_fen"))["total"]
        or 0
    )
    return max(payment.amount_fen - committed, 0)


def refunds_of_payment(payment_id: int) -> QuerySet[Refund]:
    return Refund.objects.filter(payment_id=payment_id).order_by("id")


def paid_unsettled_ids(*, hold_id: int, winner_id: int | None) -> list[int]:
    """Paid payments of a hold that are neither the one that won its slot nor being refunded: each
    still awaits booking's decision (register or refund)."""
    return list(
        Payment.objects.filter(hold_id=hold_id, state=Payment.State.PAID, refunds__isnull=True)
        .exclude(id=winner_id or 0)
        .values_list("id", flat=True)
    )


def paid_awaiting_settlement(*, hold_id: int) -> bool:
    """A live hold (no winning payment yet) has a paid payment that is not settled."""
    return Payment.objects.filter(hold_id=hold_id, state=Payment.State.PAID, refunds__isnull=True).exists()
