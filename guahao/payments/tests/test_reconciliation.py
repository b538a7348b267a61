"""Reconciliation (对账): the providers' bill formats read back exactly what was written; a day's bill
against our books yields exactly the differences there are; a tampered bill is refused; a rerun
updates instead of duplicating; each merchant's bill is downloaded from its provider (here the
sandbox gateway, for both providers); finance works the queue in the console, every close audited."""

from __future__ import annotations

import datetime as dt
import gzip
import io
import zipfile

import pytest
from django.core.management import call_command

from guahao import clock
from guahao.booking.models import Hold
from guahao.console import roles
from guahao.console.models import AuditEntry
from guahao.console.testing import console_client, make_staff
from guahao.his.base import RegistrationRecord
from guahao.payments import services as payments
from guahao.payments.models import Discrepancy, Payment, ReconciliationRun, Refund
from guahao.payments.reconciliation import his as his_day
from guahao.payments.reconciliation import run_day, services
from guahao.payments.reconciliation.bills import (
    SUCCESS,
    BillError,
    BillRow,
    fen_of,
    parse_alipay_bill,
    parse_wechat_bill,
    sha1_of,
    write_alipay_bill,
    write_wechat_bill,
)
from guahao.payments.tests.helpers import (
    CHANNELS,
    accepted,
    deliver,
    make_hold,
    paid_payment,
    refund_deliveries,
)
from guahao.testing import payment_sandbox

DAY = dt.date(2026, 11, 25)
QUEUE = "/admin/payments/discrepancy/"
# The bill source of the development sandbox's WeChat Pay merchant.
SOURCE = "wechatpay:sandbox"


def at(hour: int, minute: int = 0, second: int = 0, *, day: dt.date = DAY) -> dt.datetime:
    return clock.at_local(day, dt.time(hour, minute, second))


def sample_rows() -> list[BillRow]:
    return [
        BillRow("payment", "GH0001", "", "4200000001", 1, SUCCESS, at(0, 0, 1)),
        BillRow("payment", "GH0002", "", "4200000002", 2500, SUCCESS, at(9, 30)),
        BillRow("payment", "GH0003", "", "4200000003", 123456789, SUCCESS, at(23, 59, 59)),
        BillRow("refund", "GH0002", "GH0002R1", "4200000002", 1999, SUCCESS, at(12)),
    ]


# --- formats -----------------------------------------------------------------------------------


def test_amounts_in_yuan_are_read_to_the_fen_exactly():
    assert [fen_of(t) for t in ("0.01", "0.1", "25.00", "19.99", "1234567.89", "-3.50", "7")] == [
        1, 10, 2500, 1999, 123456789, -350, 700,
    ]  # fmt: skip
    for bad in ("1.234", "abc", "", "1e3"):
        with pytest.raises(BillError):
            fen_of(bad)


def test_wechat_trade_bill_round_trip_keeps_amounts_backticks_and_summary():
    data = write_wechat_bill(sample_rows())
    text = gzip.decompress(data).decode("utf-8")
    lines = text.splitlines()
    assert lines[0].startswith("交易时间,公众账号ID,商户号")
    assert lines[1].startswith("`2026-11-25 00:00:01,`wx")
    assert lines[-2].startswith("总交易单数,应结订单总金额,退款总金额")
    assert lines[-1].startswith("`4,`1234592.90,`19.99,")
    assert parse_wechat_bill(data) == sample_rows()
    assert parse_wechat_bill(write_wechat_bill(sample_rows(), gzipped=False)) == sample_rows()


def test_a_wechat_bill_whose_summary_does_not_add_up_is_refused():
    text = gzip.decompress(write_wechat_bill(sample_rows())).decode()
    with pytest.raises(BillError, match="汇总 5 笔"):
        parse_wechat_bill(text.replace("`4,`1234592.90", "`5,`1234592.90").encode())
    with pytest.raises(BillError, match="应结订单总金额"):
        parse_wechat_bill(text.replace("`4,`1234592.90", "`4,`1234592.91").encode())
    with pytest.raises(BillError, match="汇总行"):
        parse_wechat_bill(text.split("总交易单数")[0].encode())


def test_alipay_bill_round_trip_is_a_zipped_gbk_csv_with_comment_lines():
    data = write_alipay_bill(sample_rows(), day=DAY)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        (name,) = archive.namelist()
        raw = archive.read(name)
    assert name.endswith("_业务明细.csv")
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    text = raw.decode("gbk")
    assert text.startswith("#支付宝业务明细查询")
    assert "支付宝交易号,商户订单号,业务类型" in text and "#退款合计：1笔" in text
    assert ",退款,挂号费," in text and "-19.99" in text
    assert parse_alipay_bill(data) == sample_rows()
    assert parse_alipay_bill(raw) == sample_rows()
    with pytest.raises(BillError, match="交易合计 4 笔"):
        parse_alipay_bill(text.replace("#交易合计：3笔", "#交易合计：4笔").encode("gbk"))


# --- against our books -------------------------------------------------------------------------


def paid_payments(hold: Hold, count: int, *, start: int = 0, day: dt.date = DAY) -> list[Payment]:
    """`count` PAID payments of `day` on one hold (enough for the books; booking is not involved)."""
    paid_at = at(10, day=day)
    Payment.objects.bulk_create(
        Payment(
            hold=hold, account=hold.account, provider="wechatpay", merchant_key="sandbox", channel="wechat",
            out_trade_no=f"GH{n:06d}",
            provider_trade_no=f"42{n:08d}", amount_fen=1000 + n, state=Payment.State.PAID, created_at=paid_at,
            opened_at=paid_at, expires_at=paid_at, paid_at=paid_at + dt.timedelta(seconds=n),
        )
        for n in range(start, start + count)
    )  # fmt: skip
    return list(
        Payment.objects.filter(out_trade_no__in=[f"GH{n:06d}" for n in range(start, start + count)])
    )


def bill_of(payments: list[Payment]) -> list[BillRow]:
    return [
        BillRow(
            "payment", p.out_trade_no, "", p.provider_trade_no, p.amount_fen, SUCCESS, p.paid_at
        )
        for p in payments
    ]


@pytest.fixture
def thousand(db) -> tuple[Hold, bytes]:
    """1,000 of our payments; a bill of 1,000 rows: one of ours left out (GH000500), one we never
    booked (GH999999), one a fen more than ours (GH000042)."""
    hold = make_hold()
    rows = bill_of(paid_payments(hold, 1000))
    rows[42] = BillRow("payment", rows[42].out_trade_no, "", rows[42].provider_trade_no, rows[42].amount_fen + 1,
                       SUCCESS, rows[42].at)  # fmt: skip
    only_ours = rows.pop(500)
    rows.append(BillRow("payment", "GH999999", "", "4299999999", 3000, SUCCESS, at(18)))
    assert len(rows) == 1000 and only_ours.out_trade_no == "GH000500"
    return hold, write_wechat_bill(rows)


def open_items() -> set[tuple[str, str]]:
    return set(Discrepancy.objects.filter(resolved_at=None).values_list("kind", "out_trade_no"))


def test_a_thousand_row_bill_yields_exactly_the_three_differences(thousand):
    hold, bill = thousand
    # WeChat's hash_value is over the bill before gzip, as its download answer gives it.
    run = services.reconcile_bill(
        provider=SOURCE, day=DAY, bill=bill, bill_format="wechat", hash_type="SHA1",
        hash_value=sha1_of(gzip.decompress(bill)),
    )  # fmt: skip
    assert run.status == ReconciliationRun.Status.OK
    assert (run.bill_rows, run.matched, run.discrepancies) == (1000, 998, 3)
    assert open_items() == {
        (Discrepancy.Kind.PROVIDER_ONLY, "GH999999"),
        (Discrepancy.Kind.OURS_ONLY, "GH000500"),
        (Discrepancy.Kind.AMOUNT_DIFFERS, "GH000042"),
    }
    amount = Discrepancy.objects.get(kind=Discrepancy.Kind.AMOUNT_DIFFERS)
    assert (amount.our_amount_fen, amount.provider_amount_fen) == (1042, 1043)
    assert amount.hospital_id == hold.session.hospital_id
    assert Discrepancy.objects.get(out_trade_no="GH999999").hospital_id is None


def test_a_bill_whose_hash_does_not_match_is_refused_and_nothing_is_recorded(thousand):
    _hold, bill = thousand
    tampered = gzip.compress(gzip.decompress(bill).replace(b"`10.41", b"`1.41"), mtime=0)
    assert tampered != bill
    run = services.reconcile_bill(
        provider=SOURCE, day=DAY, bill=tampered, bill_format="wechat", hash_type="SHA1",
        hash_value=sha1_of(gzip.decompress(bill)),
    )  # fmt: skip
    assert run.status == ReconciliationRun.Status.FAILED
    assert "校验失败" in run.error
    assert run.bill_sha1 == sha1_of(tampered)
    assert not Discrepancy.objects.exists()


def test_a_hash_over_the_compressed_file_is_not_wechats_and_is_refused(thousand):
    _hold, bill = thousand
    run = services.reconcile_bill(
        provider=SOURCE,
        day=DAY,
        bill=bill,
        bill_format="wechat",
        hash_type="SHA1",
        hash_value=sha1_of(bill),
    )
    assert run.status == ReconciliationRun.Status.FAILED
    assert not Discrepancy.objects.exists()


def test_a_bill_that_is_not_gzip_after_all_is_refused(thousand):
    _hold, bill = thousand
    damaged = bill[: len(bill) // 2]
    run = services.reconcile_bill(
        provider=SOURCE, day=DAY, bill=damaged, bill_format="wechat", hash_type="SHA1",
        hash_value=sha1_of(gzip.decompress(bill)),
    )  # fmt: skip
    assert run.status == ReconciliationRun.Status.FAILED
    assert not Discrepancy.objects.exists()


def test_rerunning_a_day_updates_the_run_and_keeps_one_row_per_difference(
    thousand, django_user_model
):
    _hold, bill = thousand
    rows = parse_wechat_bill(bill)
    first = services.reconcile(provider=SOURCE, day=DAY, bill_rows=rows)
    again = services.reconcile(provider=SOURCE, day=DAY, bill_rows=rows)
    assert again.pk == first.pk and ReconciliationRun.objects.count() == 1
    assert Discrepancy.objects.count() == 3

    handled = Discrepancy.objects.get(kind=Discrepancy.Kind.PROVIDER_ONLY)
    services.mark_resolved(
        discrepancy_id=handled.pk, staff_username="li.finance", note="支付机构确认为测试订单"
    )
    Payment.objects.filter(out_trade_no="GH000042").update(amount_fen=1043)  # our side corrected
    services.reconcile(provider=SOURCE, day=DAY, bill_rows=rows)

    assert Discrepancy.objects.count() == 3
    assert open_items() == {(Discrepancy.Kind.OURS_ONLY, "GH000500")}
    handled.refresh_from_db()
    assert handled.resolved_by == "li.finance"  # a person's close is not undone by a rerun
    fixed = Discrepancy.objects.get(kind=Discrepancy.Kind.AMOUNT_DIFFERS)
    assert (fixed.resolved_by, fixed.resolution_note) == (services.SYSTEM, services.AUTO_RESOLVED)


def test_refunds_are_matched_by_refund_number_and_a_manual_one_in_the_bill_is_flagged(db):
    hold = make_hold()
    (payment,) = paid_payments(hold, 1)
    refunds = Refund.objects.bulk_create(
        Refund(payment=payment, refund_no=f"{payment.out_trade_no}R{n}", amount_fen=500, reason="取消挂号",
               state=state, created_at=at(11), succeeded_at=at(11))
        for n, state in enumerate((Refund.State.SUCCEEDED, Refund.State.MANUAL, Refund.State.SUCCEEDED))
    )  # fmt: skip
    rows = bill_of([payment]) + [
        BillRow("refund", payment.out_trade_no, refunds[0].refund_no, "", 500, SUCCESS, at(11)),
        BillRow("refund", payment.out_trade_no, refunds[1].refund_no, "", 500, SUCCESS, at(11)),
    ]
    run = services.reconcile(provider=SOURCE, day=DAY, bill_rows=rows)
    assert run.matched == 2
    assert set(Discrepancy.objects.values_list("kind", "out_refund_no")) == {
        (Discrepancy.Kind.STATUS_DIFFERS, refunds[1].refund_no),
        (Discrepancy.Kind.OURS_ONLY, refunds[2].refund_no),
    }
    assert "两次退款" in Discrepancy.objects.get(kind=Discrepancy.Kind.STATUS_DIFFERS).detail


def test_only_our_payments_of_that_shanghai_day_are_expected_in_its_bill(db):
    hold = make_hold()
    paid_payments(hold, 1, day=DAY - dt.timedelta(days=1))
    Payment.objects.update(
        paid_at=at(23, 59, day=DAY - dt.timedelta(days=1))
    )  # 15:59 UTC of the day before
    services.reconcile(provider=SOURCE, day=DAY, bill_rows=[])
    assert not Discrepancy.objects.exists()


# --- bills downloaded from the providers (the sandbox gateway) ----------------------------------
#
# The gateway keeps its books for the whole test run, whatever the tests' databases roll back: each
# test below pays on a day of its own, so that day's bills hold its payments only.


def pay_through_the_gateway(day: dt.date, channel: str, *, refund_fen: int = 0) -> Payment:
    """An order of `day` paid at the provider and settled by its notification (10:00 Beijing
    time), with an optional partial refund that succeeds the same day."""
    with clock.frozen_at(at(10, day=day)):
        payment = paid_payment(make_hold(channel))
        if refund_fen:
            refund = payments.request_refund(
                payment=payment,
                amount_fen=refund_fen,
                reason="部分退款",
                refund_no=f"RF{payment.out_trade_no}",
            )
            payments.submit_refund(refund_id=refund.id)
            for delivery in refund_deliveries(payment):
                assert accepted(payment.provider, deliver(delivery))
    payment.refresh_from_db()
    return payment


def only_ours(day: dt.date, provider: str) -> Payment:
    """A payment our books have as paid on `day` that the provider never saw."""
    hold = make_hold()
    paid_at = at(11, day=day)
    return Payment.objects.create(
        hold=hold, account=hold.account, provider=provider, merchant_key="sandbox", channel="wechat",
        out_trade_no=f"GHONLYOURS{provider}{day:%m%d}", provider_trade_no="", amount_fen=1000,
        state=Payment.State.PAID, created_at=paid_at, opened_at=paid_at, expires_at=paid_at, paid_at=paid_at,
    )  # fmt: skip


def test_the_gateways_bills_are_its_own_ledger_of_the_day(db, booking_calls):
    day = dt.date(2026, 3, 2)
    wechat = pay_through_the_gateway(day, "wechat", refund_fen=300)
    alipay = pay_through_the_gateway(day, "alipay", refund_fen=300)
    gateway = payment_sandbox()

    wechat_rows = parse_wechat_bill(gateway.bill("wechat", day))
    assert [(r.kind, r.out_trade_no, r.out_refund_no, r.amount_fen) for r in wechat_rows] == [
        ("payment", wechat.out_trade_no, "", 1000),
        ("refund", wechat.out_trade_no, f"RF{wechat.out_trade_no}", 300),
    ]
    assert wechat_rows[0].provider_trade_no == wechat.provider_trade_no
    alipay_rows = parse_alipay_bill(gateway.bill("alipay", day))
    assert [(r.kind, r.out_trade_no, r.out_refund_no, r.amount_fen) for r in alipay_rows] == [
        ("payment", alipay.out_trade_no, "", 1000),
        ("refund", alipay.out_trade_no, f"RF{alipay.out_trade_no}", 300),
    ]
    assert parse_wechat_bill(gateway.bill("wechat", day + dt.timedelta(days=1))) == []


def test_run_day_downloads_each_merchants_bill_and_finds_the_books_in_order(db, booking_calls):
    day = dt.date(2026, 3, 3)
    paid = {channel: [pay_through_the_gateway(day, channel, refund_fen=300), pay_through_the_gateway(day, channel)]
            for channel in CHANNELS}  # fmt: skip
    with clock.frozen_at(
        at(3, day=day + dt.timedelta(days=1))
    ):  # the bills are ready the next morning
        runs = run_day(day=day, his=False)

    by_source = {run.provider: run for run in runs}
    assert set(by_source) >= {"wechatpay:sandbox", "alipay:sandbox"}
    for source in ("wechatpay:sandbox", "alipay:sandbox"):
        run = by_source[source]
        assert run.status == ReconciliationRun.Status.OK, run.error
        assert (run.bill_rows, run.matched, run.discrepancies) == (
            3,
            3,
            0,
        )  # two payments, one refund
    assert by_source["wechatpay:sandbox"].bill_sha1  # the downloaded file's digest is kept
    assert not Discrepancy.objects.exists()
    assert len(paid["wechat"]) == len(paid["alipay"]) == 2


def test_run_day_finds_a_payment_only_we_have_and_reruns_without_duplicates(db, booking_calls):
    day = dt.date(2026, 3, 4)
    pay_through_the_gateway(day, "wechat")
    pay_through_the_gateway(day, "alipay")
    ours = only_ours(day, "alipay")
    with clock.frozen_at(at(3, day=day + dt.timedelta(days=1))):
        run_day(day=day, source="alipay", his=False)
        (run,) = run_day(day=day, source="alipay", his=False)
    assert (run.provider, run.bill_rows, run.matched, run.discrepancies) == (
        "alipay:sandbox",
        1,
        1,
        1,
    )
    assert ReconciliationRun.objects.filter(day=day).count() == 1  # WeChat's merchant was not asked
    assert open_items() == {(Discrepancy.Kind.OURS_ONLY, ours.out_trade_no)}


def test_a_bill_that_cannot_be_downloaded_fails_its_run_and_the_others_still_run(db, booking_calls):
    day = dt.date(2026, 3, 5)
    pay_through_the_gateway(day, "wechat")
    pay_through_the_gateway(day, "alipay")
    payment_sandbox().fault("wechat.bill", "error")
    with clock.frozen_at(at(3, day=day + dt.timedelta(days=1))):
        runs = {run.provider: run for run in run_day(day=day, his=False)}
    assert runs["wechatpay:sandbox"].status == ReconciliationRun.Status.FAILED
    assert "账单下载失败" in runs["wechatpay:sandbox"].error
    assert runs["alipay:sandbox"].status == ReconciliationRun.Status.OK
    assert not Discrepancy.objects.exists()


def test_a_day_without_trades_has_no_bill_and_our_payments_of_it_are_still_looked_for(db):
    day = dt.date(2026, 3, 6)
    ours = only_ours(day, "wechatpay")
    with clock.frozen_at(at(3, day=day + dt.timedelta(days=1))):
        (run,) = run_day(day=day, source="wechatpay", his=False)
    assert (run.status, run.bill_rows, run.discrepancies) == (ReconciliationRun.Status.OK, 0, 1)
    assert open_items() == {(Discrepancy.Kind.OURS_ONLY, ours.out_trade_no)}


# --- the command -------------------------------------------------------------------------------


def test_reconcile_command_prints_a_chinese_summary_and_exits_1_while_differences_are_open(
    db, booking_calls
):
    day = dt.date(2026, 3, 9)
    pay_through_the_gateway(day, "wechat")
    missing = only_ours(day, "wechatpay")

    with clock.frozen_at(at(9, day=day + dt.timedelta(days=1))):
        out = io.StringIO()
        with pytest.raises(SystemExit) as exit_:
            call_command(
                "reconcile",
                "--date",
                day.isoformat(),
                "--provider",
                "wechatpay",
                "--no-his",
                stdout=out,
            )
        assert exit_.value.code == 1
        text = out.getvalue()
        assert "对账日期：2026-03-09" in text
        assert "[wechatpay:sandbox] 账单笔数 1，一致笔数 1，差异 1 笔" in text
        assert "仅本系统有：1 笔" in text

        item = Discrepancy.objects.get()
        assert item.out_trade_no == missing.out_trade_no
        services.mark_resolved(discrepancy_id=item.pk, staff_username="li.finance", note="已核实")
        out = io.StringIO()
        call_command(
            "reconcile",
            "--date",
            day.isoformat(),
            "--provider",
            "wechatpay",
            "--no-his",
            stdout=out,
        )
        assert "未处理差异 0 笔" in out.getvalue()  # no SystemExit: status 0


# --- HIS day list ------------------------------------------------------------------------------


class DayList:
    def __init__(self, records: list[RegistrationRecord]) -> None:
        self.records = records

    def registrations_of_day(self, day: dt.date) -> list[RegistrationRecord]:
        return self.records


def test_his_registrations_we_do_not_have_are_his_only(db, monkeypatch):
    hold = make_hold()
    hospital_id = hold.session.hospital_id
    monkeypatch.setattr(his_day, "his_hospital_ids", lambda: [hospital_id])
    monkeypatch.setattr(
        his_day,
        "adapter_for",
        lambda _id: DayList(
            [
                RegistrationRecord("HIS-1", "booked", fee_fen=1000),
                RegistrationRecord("HIS-2", "cancelled"),
            ]
        ),
    )
    runs = run_day(day=DAY, source="his")
    his_run = next(r for r in runs if r.provider == his_day.his_source(hospital_id))
    assert (his_run.status, his_run.bill_rows, his_run.discrepancies) == (
        ReconciliationRun.Status.OK,
        1,
        1,
    )
    item = Discrepancy.objects.get(provider=his_run.provider)
    assert (item.kind, item.out_trade_no, item.hospital_id) == (
        Discrepancy.Kind.HIS_ONLY,
        "HIS-1",
        hospital_id,
    )


# --- the console queue -------------------------------------------------------------------------


def test_finance_closes_a_difference_with_a_note_and_the_close_is_audited(thousand):
    hold, bill = thousand
    services.reconcile(provider=SOURCE, day=DAY, bill_rows=parse_wechat_bill(bill))
    user = make_staff(role=roles.FINANCE, hospitals=[hold.session.hospital])
    client = console_client(user)

    page = client.get(QUEUE).content.decode()
    assert "GH000042" in page and "10.42" in page and "10.43" in page
    assert "GH999999" not in page  # no known hospital: superusers only
    assert client.get("/admin/payments/reconciliationrun/").status_code == 200

    item = Discrepancy.objects.get(kind=Discrepancy.Kind.AMOUNT_DIFFERS)
    chosen = {"action": "mark_resolved", "_selected_action": [item.pk]}
    confirm = client.post(QUEUE, chosen)
    assert confirm.status_code == 200 and "GH000042" in confirm.content.decode()
    assert (
        "请填写处理说明"
        in client.post(QUEUE, {**chosen, "apply": "yes", "note": " "}).content.decode()
    )
    item.refresh_from_db()
    assert item.resolved_at is None

    assert (
        client.post(
            QUEUE, {**chosen, "apply": "yes", "note": "已与支付机构核实，差额 0.01 元已退"}
        ).status_code
        == 302
    )
    item.refresh_from_db()
    assert item.resolved_by == user.get_username() and item.resolution_note.startswith(
        "已与支付机构核实"
    )
    audit = AuditEntry.objects.get(action=AuditEntry.Action.OTHER)
    assert "已与支付机构核实" in audit.detail and audit.hospital_id == hold.session.hospital_id


def test_operations_staff_cannot_see_the_queue(thousand):
    hold, _bill = thousand
    client = console_client(make_staff(role=roles.OPERATIONS, hospitals=[hold.session.hospital]))
    assert client.get(QUEUE).status_code == 403
