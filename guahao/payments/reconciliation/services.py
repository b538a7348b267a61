"""Reconciliation (对账): one day of a provider's bill, or of a hospital's HIS registrations, against
our own books. Every run writes one ReconciliationRun per (source, day) and its discrepancies in one
transaction; a rerun of the same day updates both instead of adding rows, and a discrepancy the
rerun no longer finds is closed as resolved by the system."""

from __future__ import annotations

import datetime as dt
import gzip
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.db import transaction

from guahao import clock
from guahao.payments.models import Discrepancy, Payment, ReconciliationRun, Refund
from guahao.payments.reconciliation.bills import (
    SUCCESS,
    BillError,
    BillRow,
    parse_alipay_bill,
    parse_wechat_bill,
    sha1_of,
    verify_hash,
)

SYSTEM = "system"
AUTO_RESOLVED = "复核时已一致"
PAYMENT_KINDS = (
    Discrepancy.Kind.PROVIDER_ONLY,
    Discrepancy.Kind.OURS_ONLY,
    Discrepancy.Kind.AMOUNT_DIFFERS,
    Discrepancy.Kind.STATUS_DIFFERS,
)


@dataclass(frozen=True)
class Finding:
    kind: str
    out_trade_no: str = ""
    out_refund_no: str = ""
    our_amount_fen: int | None = None
    provider_amount_fen: int | None = None
    detail: str = ""
    hospital_id: int | None = None


@dataclass
class Comparison:
    rows: int = 0
    matched: int = 0
    findings: list[Finding] = field(default_factory=list)


def day_bounds(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """The Asia/Shanghai calendar day as [start, end)."""
    return clock.at_local(day, dt.time.min), clock.at_local(day + dt.timedelta(days=1), dt.time.min)


def _hospital_id(payment: Payment) -> int | None:
    return payment.hold.session.hospital_id


def source_of(provider: str, merchant_key: str) -> str:
    """The reconciliation source of one merchant's bill: "wechatpay:12", "alipay:sandbox"."""
    return f"{provider}:{merchant_key}"


def _scope(source: str) -> tuple[dict, dict]:
    """Filters of our payments and refunds a bill of `source` covers (one merchant's, or a whole
    provider's when the source names no merchant)."""
    provider, _, merchant_key = source.partition(":")
    payments, refunds = {"provider": provider}, {"payment__provider": provider}
    if merchant_key:
        payments["merchant_key"] = refunds["payment__merchant_key"] = merchant_key
    return payments, refunds


def compare_bill(*, provider: str, day: dt.date, bill_rows: Iterable[BillRow]) -> Comparison:
    """Bill rows against our PAID payments and SUCCEEDED refunds of `provider` (a source, see
    source_of) on `day`. Read only.

    A bill row is looked up by its order (refund) number whatever day we booked it on; our rows
    missing from the bill are only those of `day`. A refund we settled by hand (MANUAL) is not
    expected in the bill: when it is there, the patient was paid back twice (status differs)."""
    rows = list(bill_rows)
    start, end = day_bounds(day)
    our_payments, our_refunds = _scope(provider)
    result = Comparison(rows=len(rows))
    payment_rows = [r for r in rows if r.kind == "payment"]
    refund_rows = [r for r in rows if r.kind == "refund"]
    payments = {
        p.out_trade_no: p
        for p in Payment.objects.filter(**our_payments, out_trade_no__in=[r.out_trade_no for r in payment_rows])
        .select_related("hold__session")
        .iterator(chunk_size=2000)
    }
    refunds = {
        r.refund_no: r
        for r in Refund.objects.filter(**our_refunds, refund_no__in=[r.out_refund_no for r in refund_rows])
        .select_related("payment__hold__session")
        .iterator(chunk_size=2000)
    }

    for row in payment_rows:
        ours = payments.get(row.out_trade_no)
        if ours is None:
            result.findings.append(
                Finding(Discrepancy.Kind.PROVIDER_ONLY, row.out_trade_no, provider_amount_fen=row.amount_fen,
                        detail=f"账单中有此订单（{row.provider_trade_no}），本系统没有")
            )  # fmt: skip
            continue
        hospital = _hospital_id(ours)
        if (row.status == SUCCESS) != (ours.state == Payment.State.PAID):
            result.findings.append(
                Finding(Discrepancy.Kind.STATUS_DIFFERS, row.out_trade_no, our_amount_fen=ours.amount_fen,
                        provider_amount_fen=row.amount_fen, hospital_id=hospital,
                        detail=f"账单状态 {row.status}，本系统{ours.get_state_display()}")
            )  # fmt: skip
        elif row.amount_fen != ours.amount_fen:
            result.findings.append(
                Finding(Discrepancy.Kind.AMOUNT_DIFFERS, row.out_trade_no, our_amount_fen=ours.amount_fen,
                        provider_amount_fen=row.amount_fen, hospital_id=hospital, detail="订单金额不一致")
            )  # fmt: skip
        else:
            result.matched += 1

    for row in refund_rows:
        refund = refunds.get(row.out_refund_no)
        if refund is None:
            result.findings.append(
                Finding(Discrepancy.Kind.PROVIDER_ONLY, row.out_trade_no, row.out_refund_no,
                        provider_amount_fen=row.amount_fen, detail="账单中有此退款，本系统没有")
            )  # fmt: skip
            continue
        hospital = _hospital_id(refund.payment)
        if (row.status == SUCCESS) != (refund.state == Refund.State.SUCCEEDED):
            detail = f"账单退款状态 {row.status}，本系统{refund.get_state_display()}"
            if refund.state == Refund.State.MANUAL:
                detail += "：已线下退款又在支付机构退款成功，患者收到两次退款"
            result.findings.append(
                Finding(Discrepancy.Kind.STATUS_DIFFERS, refund.payment.out_trade_no, row.out_refund_no,
                        our_amount_fen=refund.amount_fen, provider_amount_fen=row.amount_fen, hospital_id=hospital,
                        detail=detail)
            )  # fmt: skip
        elif row.amount_fen != refund.amount_fen:
            result.findings.append(
                Finding(Discrepancy.Kind.AMOUNT_DIFFERS, refund.payment.out_trade_no, row.out_refund_no,
                        our_amount_fen=refund.amount_fen, provider_amount_fen=row.amount_fen, hospital_id=hospital,
                        detail="退款金额不一致")
            )  # fmt: skip
        else:
            result.matched += 1

    in_bill = {r.out_trade_no for r in payment_rows}
    for payment in (
        Payment.objects.filter(**our_payments, state=Payment.State.PAID, paid_at__gte=start, paid_at__lt=end)
        .exclude(out_trade_no__in=in_bill)
        .select_related("hold__session")
    ):
        result.findings.append(
            Finding(Discrepancy.Kind.OURS_ONLY, payment.out_trade_no, our_amount_fen=payment.amount_fen,
                    hospital_id=_hospital_id(payment), detail="本系统已支付，账单中没有此订单")
        )  # fmt: skip
    refunds_in_bill = {r.out_refund_no for r in refund_rows}
    for refund in (
        Refund.objects.filter(
            **our_refunds, state=Refund.State.SUCCEEDED, succeeded_at__gte=start, succeeded_at__lt=end
        )
        .exclude(refund_no__in=refunds_in_bill)
        .select_related("payment__hold__session")
    ):
        result.findings.append(
            Finding(Discrepancy.Kind.OURS_ONLY, refund.payment.out_trade_no, refund.refund_no,
                    our_amount_fen=refund.amount_fen, hospital_id=_hospital_id(refund.payment),
                    detail="本系统已退款，账单中没有此退款")
        )  # fmt: skip
    return result


def _start(*, provider: str, day: dt.date) -> ReconciliationRun:
    run, _ = ReconciliationRun.objects.update_or_create(
        provider=provider,
        day=day,
        defaults={"started_at": clock.now(), "finished_at": None, "status": ReconciliationRun.Status.RUNNING, "error": ""},
    )
    return run


def record_failure(*, provider: str, day: dt.date, error: str, bill_sha1: str = "") -> ReconciliationRun:
    """A run that could not compare (bill rejected, download failed): no discrepancy is written and
    the earlier findings of the day stay as they were."""
    run = _start(provider=provider, day=day)
    run.status = ReconciliationRun.Status.FAILED
    run.error = error[:300]
    run.bill_sha1 = bill_sha1
    run.finished_at = clock.now()
    run.save()
    return run


@transaction.atomic
def record_comparison(
    *, provider: str, day: dt.date, comparison: Comparison, kinds: Iterable[str], bill_sha1: str = ""
) -> ReconciliationRun:
    """Write the run and its findings: new ones added, known ones refreshed (reopened if a rerun
    finds them again after a system close), and unresolved ones of `kinds` no longer found closed."""
    run = _start(provider=provider, day=day)
    now = clock.now()
    found: set[tuple[str, str, str]] = set()
    for f in comparison.findings:
        key = (f.kind, f.out_trade_no, f.out_refund_no)
        found.add(key)
        item, created = Discrepancy.objects.get_or_create(
            provider=provider, day=day, kind=f.kind, out_trade_no=f.out_trade_no, out_refund_no=f.out_refund_no,
            defaults={"run": run, "found_at": now, "hospital_id": f.hospital_id, "our_amount_fen": f.our_amount_fen,
                      "provider_amount_fen": f.provider_amount_fen, "detail": f.detail[:300]},
        )  # fmt: skip
        if not created:
            item.run = run
            item.hospital_id = f.hospital_id
            item.our_amount_fen = f.our_amount_fen
            item.provider_amount_fen = f.provider_amount_fen
            item.detail = f.detail[:300]
            if item.resolved_by == SYSTEM:
                item.resolved_at, item.resolved_by, item.resolution_note = None, "", ""
            item.save()
    stale = Discrepancy.objects.filter(provider=provider, day=day, kind__in=list(kinds), resolved_at__isnull=True)
    for item in stale:
        if (item.kind, item.out_trade_no, item.out_refund_no) not in found:
            item.resolved_at, item.resolved_by, item.resolution_note = now, SYSTEM, AUTO_RESOLVED
            item.save(update_fields=["resolved_at", "resolved_by", "resolution_note"])
    run.bill_rows = comparison.rows
    run.matched = comparison.matched
    run.discrepancies = len(comparison.findings)
    run.bill_sha1 = bill_sha1
    run.status = ReconciliationRun.Status.OK
    run.finished_at = clock.now()
    run.save()
    return run


def reconcile(*, provider: str, day: dt.date, bill_rows: Iterable[BillRow], bill_sha1: str = "") -> ReconciliationRun:
    """Compare parsed bill rows with our books and record the day's run and discrepancies."""
    comparison = compare_bill(provider=provider, day=day, bill_rows=bill_rows)
    return record_comparison(provider=provider, day=day, comparison=comparison, kinds=PAYMENT_KINDS, bill_sha1=bill_sha1)


def reconcile_bill(
    *, provider: str, day: dt.date, bill: bytes, bill_format: str, hash_type: str = "", hash_value: str = ""
) -> ReconciliationRun:
    """A downloaded bill file: its hash checked (when the download answer carried one; WeChat's is
    over the bill before gzip), parsed, summary checked, then reconciled. A rejected bill marks the
    run failed and writes nothing else."""
    sha1 = sha1_of(bill)
    try:
        if hash_value:
            verify_hash(_uncompressed(bill), hash_type=hash_type or "SHA1", hash_value=hash_value)
        rows = parse_wechat_bill(bill) if bill_format == "wechat" else parse_alipay_bill(bill)
    except BillError as exc:
        return record_failure(provider=provider, day=day, error=exc.message, bill_sha1=sha1)
    return reconcile(provider=provider, day=day, bill_rows=rows, bill_sha1=sha1)


def _uncompressed(bill: bytes) -> bytes:
    if bill[:2] != b"\x1f\x8b":
        return bill
    try:
        return gzip.decompress(bill)
    except (OSError, EOFError) as exc:
        raise BillError("账单文件损坏，无法解压") from exc


def unresolved_by_kind(*, day: dt.date, providers: Iterable[str] | None = None) -> Counter[str]:
    items = Discrepancy.objects.filter(day=day, resolved_at__isnull=True)
    if providers is not None:
        items = items.filter(provider__in=list(providers))
    return Counter(items.values_list("kind", flat=True))


@transaction.atomic
def mark_resolved(*, discrepancy_id: int, staff_username: str, note: str) -> Discrepancy:
    """Close one discrepancy with the finance officer's reason. Already closed: returned unchanged."""
    item = Discrepancy.objects.select_for_update().get(id=discrepancy_id)
    if item.resolved_at is None:
        item.resolved_at = clock.now()
        item.resolved_by = staff_username[:150]
        item.resolution_note = note[:200]
        item.save(update_fields=["resolved_at", "resolved_by", "resolution_note"])
    return item
