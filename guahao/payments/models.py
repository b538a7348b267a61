from __future__ import annotations

from django.db import models


class Payment(models.Model):
    """One payment order at a provider for one hold. Amounts in fen."""

    class State(models.TextChoices):
        CREATED = "created", "待支付"
        PAID = "paid", "已支付"
        CLOSED = "closed", "已关闭"

    hold = models.ForeignKey("booking.Hold", on_delete=models.PROTECT, related_name="payments", verbose_name="锁号")
    account = models.ForeignKey("patients.Account", on_delete=models.PROTECT, related_name="payments", verbose_name="账号")
    provider = models.CharField("支付机构", max_length=20)
    channel = models.CharField("支付渠道", max_length=10)
    insurance = models.BooleanField("医保支付", default=False)
    out_trade_no = models.CharField("商户订单号", max_length=40, unique=True)
    provider_trade_no = models.CharField("支付机构交易号", max_length=64, blank=True)
    amount_fen = models.PositiveIntegerField("金额（分）")
    refunded_fen = models.PositiveIntegerField("已退金额（分）", default=0)
    state = models.CharField("状态", max_length=10, choices=State.choices, default=State.CREATED)
    created_at = models.DateTimeField()
    # Set once the provider has the order (create_order answered): only then may another request
    # close it, so a close can never overtake the create and leave a payable order behind.
    opened_at = models.DateTimeField(null=True, blank=True)
    # The provider refuses payment after this (the hold's expiry plus a margin).
    expires_at = models.DateTimeField("支付截止")
    paid_at = models.DateTimeField(null=True, blank=True)
    # The poller asks the provider about an open order at this time (lost notifications).
    next_poll_at = models.DateTimeField(null=True, blank=True)
    polls = models.PositiveSmallIntegerField(default=0)

    class Meta:
        verbose_name = verbose_name_plural = "支付"
        permissions = [("view_ledger_findings", "查看账务核对（ledger-check）结果")]
        indexes = [models.Index(fields=["state", "next_poll_at"])]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(refunded_fen__lte=models.F("amount_fen")), name="payment_refund_le_paid"
            ),
            # One payable order per hold: a double tap on 支付 cannot open two.
            models.UniqueConstraint(
                fields=["hold"], condition=models.Q(state="created"), name="one_open_payment_per_hold"
            ),
        ]

    def __str__(self) -> str:
        return self.out_trade_no


class Refund(models.Model):
    class State(models.TextChoices):
        PROCESSING = "processing", "退款中"
        SUCCEEDED = "succeeded", "已退款"
        FAILED = "failed", "退款失败"
        # Paid back another way (cash at the window, bank transfer) after the provider refund failed.
        MANUAL = "manual", "已线下退款"

    payment = models.ForeignKey(Payment, on_delete=models.PROTECT, related_name="refunds", verbose_name="支付")
    refund_no = models.CharField("退款单号", max_length=48, unique=True)
    amount_fen = models.PositiveIntegerField("金额（分）")
    reason = models.CharField("原因", max_length=100)
    state = models.CharField("状态", max_length=12, choices=State.choices, default=State.PROCESSING)
    created_at = models.DateTimeField()
    succeeded_at = models.DateTimeField(null=True, blank=True)
    # The poller asks the provider about a PROCESSING refund at this time (lost REFUND.SUCCESS).
    next_query_at = models.DateTimeField(null=True, blank=True)
    queries = models.PositiveSmallIntegerField(default=0)
    last_error = models.CharField("失败原因", max_length=200, blank=True)
    # last_error of a refund staff paid back by hand that the provider then paid too.
    PAID_TWICE = "支付机构后来也退款成功：患者收到两次退款，请追回线下退回的款项"
    handled_by = models.CharField("处理员工", max_length=150, blank=True)
    handled_note = models.CharField("处理说明", max_length=200, blank=True)

    class Meta:
        verbose_name = verbose_name_plural = "退款"
        permissions = [("handle_failed_refund", "处理退款失败（重试或标记线下退款）")]
        indexes = [models.Index(fields=["state", "next_query_at"])]

    def __str__(self) -> str:
        return self.refund_no


class SandboxTrade(models.Model):
    """The sandbox provider's own ledger: what a real provider keeps on its side. Our code reads it
    only through the provider's protocol (query, notifications), never directly."""

    class State(models.TextChoices):
        NOTPAY = "NOTPAY", "未支付"
        SUCCESS = "SUCCESS", "支付成功"
        CLOSED = "CLOSED", "已关闭"

    out_trade_no = models.CharField(max_length=40, unique=True)
    transaction_id = models.CharField(max_length=64, unique=True)
    amount_fen = models.PositiveIntegerField()
    description = models.CharField(max_length=128)
    notify_url = models.CharField(max_length=300)
    state = models.CharField(max_length=10, choices=State.choices, default=State.NOTPAY)
    created_at = models.DateTimeField()
    # time_expire: an unpaid order closes by itself at this moment.
    expires_at = models.DateTimeField(null=True, blank=True)
    paid_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return self.out_trade_no


class SandboxRefund(models.Model):
    class State(models.TextChoices):
        PROCESSING = "PROCESSING", "处理中"
        SUCCESS = "SUCCESS", "退款成功"

    trade = models.ForeignKey(SandboxTrade, on_delete=models.CASCADE, related_name="refunds")
    out_refund_no = models.CharField(max_length=48, unique=True)
    refund_id = models.CharField(max_length=64, unique=True)
    amount_fen = models.PositiveIntegerField()
    state = models.CharField(max_length=12, choices=State.choices, default=State.PROCESSING)
    created_at = models.DateTimeField()
    succeeded_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return self.out_refund_no


class SandboxNotification(models.Model):
    """A notification the sandbox owes our callback; retried on a provider-like schedule until a 2xx.

    The body (and its event id) is fixed when queued; every attempt is signed afresh, as WeChat Pay
    re-sends the same event with a new timestamp and nonce."""

    kind = models.CharField(max_length=20)  # TRANSACTION.SUCCESS / REFUND.SUCCESS
    url = models.CharField(max_length=300)
    body = models.TextField()
    next_attempt_at = models.DateTimeField()
    attempts = models.PositiveSmallIntegerField(default=0)
    delivered_at = models.DateTimeField(null=True, blank=True)
    trade = models.ForeignKey(
        SandboxTrade, on_delete=models.CASCADE, null=True, blank=True, related_name="notifications"
    )
    refund = models.ForeignKey(
        SandboxRefund, on_delete=models.CASCADE, null=True, blank=True, related_name="notifications"
    )
    last_status = models.PositiveSmallIntegerField(null=True, blank=True)  # HTTP status; null = no answer
    given_up_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["delivered_at", "given_up_at", "next_attempt_at"])]

    def __str__(self) -> str:
        return f"{self.kind} #{self.pk}"


class SeenNonce(models.Model):
    """Nonces of accepted provider notifications, kept while their timestamp could still pass the
    ±5 minute age check, so a captured request cannot be replayed."""

    provider = models.CharField(max_length=20)
    nonce = models.CharField(max_length=64)
    seen_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["provider", "nonce"], name="seen_nonce_once")]

    def __str__(self) -> str:
        return self.nonce


class ReconciliationRun(models.Model):
    """One day's reconciliation (对账) of one source: a payment provider's bill, or a hospital's HIS
    day list ("his-<hospital id>"). Rerunning a day updates this row."""

    class Status(models.TextChoices):
        RUNNING = "running", "进行中"
        OK = "ok", "已完成"
        FAILED = "failed", "失败"

    provider = models.CharField("对账来源", max_length=30)
    day = models.DateField("对账日期")
    started_at = models.DateTimeField("开始时间")
    finished_at = models.DateTimeField("结束时间", null=True, blank=True)
    bill_rows = models.PositiveIntegerField("账单笔数", default=0)
    matched = models.PositiveIntegerField("一致笔数", default=0)
    discrepancies = models.PositiveIntegerField("差异笔数", default=0)
    bill_sha1 = models.CharField("账单 SHA1", max_length=40, blank=True)
    status = models.CharField("状态", max_length=10, choices=Status.choices, default=Status.RUNNING)
    error = models.CharField("失败原因", max_length=300, blank=True)

    class Meta:
        verbose_name = verbose_name_plural = "对账记录"
        constraints = [models.UniqueConstraint(fields=["provider", "day"], name="one_reconciliation_run_per_day")]

    def __str__(self) -> str:
        return f"{self.provider} {self.day}"


class Discrepancy(models.Model):
    """One difference found by reconciliation, in the finance office's queue until resolved.
    Unique per (provider, day, kind, order, refund): a rerun finds the same row again."""

    class Kind(models.TextChoices):
        PROVIDER_ONLY = "provider_only", "仅支付机构有"
        OURS_ONLY = "ours_only", "仅本系统有"
        AMOUNT_DIFFERS = "amount_differs", "金额不一致"
        STATUS_DIFFERS = "status_differs", "状态不一致"
        HIS_ONLY = "his_only", "仅 HIS 有挂号"
        OURS_ONLY_HIS = "ours_only_his", "仅本系统有挂号"
        FEE_DIFFERS = "fee_differs", "挂号费不一致"

    run = models.ForeignKey(ReconciliationRun, on_delete=models.PROTECT, related_name="items", verbose_name="对账记录")
    provider = models.CharField("对账来源", max_length=30)
    day = models.DateField("对账日期")
    kind = models.CharField("差异类型", max_length=20, choices=Kind.choices)
    # For HIS rows: the registration number.
    out_trade_no = models.CharField("商户订单号", max_length=40, blank=True)
    out_refund_no = models.CharField("退款单号", max_length=48, blank=True)
    hospital = models.ForeignKey(
        "catalog.Hospital", on_delete=models.PROTECT, null=True, blank=True, related_name="+", verbose_name="医院"
    )
    our_amount_fen = models.PositiveIntegerField("本系统金额（分）", null=True, blank=True)
    provider_amount_fen = models.PositiveIntegerField("对方金额（分）", null=True, blank=True)
    detail = models.CharField("说明", max_length=300, blank=True)
    found_at = models.DateTimeField("发现时间")
    resolved_at = models.DateTimeField("处理时间", null=True, blank=True)
    resolved_by = models.CharField("处理员工", max_length=150, blank=True)
    resolution_note = models.CharField("处理说明", max_length=200, blank=True)

    class Meta:
        verbose_name = verbose_name_plural = "对账差异"
        indexes = [models.Index(fields=["resolved_at", "day"])]
        constraints = [
            models.UniqueConstraint(
                fields=["provider", "day", "kind", "out_trade_no", "out_refund_no"], name="one_discrepancy_per_finding"
            )
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.out_refund_no or self.out_trade_no}"
