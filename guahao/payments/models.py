from __future__ import annotations

from django.db import models

from guahao.fields import EncryptedTextField


class Payment(models.Model):
    """One payment order at a provider for one hold. Amounts in fen."""

    class State(models.TextChoices):
        CREATED = "created", "待支付"
        PAID = "paid", "已支付"
        CLOSED = "closed", "已关闭"

    hold = models.ForeignKey("booking.Hold", on_delete=models.PROTECT, related_name="payments", verbose_name="锁号")
    account = models.ForeignKey("patients.Account", on_delete=models.PROTECT, related_name="payments", verbose_name="账号")
    provider = models.CharField("支付机构", max_length=20)
    # Which merchant account took the money (a MerchantAccount id, or "sandbox" in development):
    # queries and refunds of this order go through the same one, whatever the console says later.
    merchant_key = models.CharField("收款商户", max_length=20, default="sandbox")
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


class MerchantAccount(models.Model):
    """A hospital's merchant account at a payment provider (WeChat Pay or Alipay), entered in the
    console. Secrets are encrypted at rest (SM4, as patients' data) and never shown back. A row
    without a hospital is the platform's account, used by hospitals that have none of their own."""

    class Provider(models.TextChoices):
        WECHATPAY = "wechatpay", "微信支付"
        ALIPAY = "alipay", "支付宝"

    hospital = models.ForeignKey(
        "catalog.Hospital",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="merchant_accounts",
        verbose_name="医院",
        help_text="留空表示平台统一收款账户（未单独配置的医院使用）",
    )
    provider = models.CharField("支付机构", max_length=20, choices=Provider.choices)
    enabled = models.BooleanField("启用", default=True, help_text="停用后新订单不再走该账户，已付款订单的查询与退款照常进行")
    app_id = models.CharField("AppID", max_length=64, help_text="微信：公众号或小程序 AppID；支付宝：开放平台应用 APPID")
    mch_id = models.CharField("商户号", max_length=64, help_text="微信：商户号 mchid；支付宝：卖家支付宝用户号（2088 开头）")
    serial_no = models.CharField("商户证书序列号", max_length=64, blank=True, help_text="仅微信支付：商户 API 证书序列号")
    private_key = EncryptedTextField("商户私钥", help_text="PEM 格式；微信为 apiclient_key.pem，支付宝为应用私钥")
    provider_public_key = models.TextField(
        "支付机构公钥", help_text="PEM 格式；微信为微信支付公钥，支付宝为支付宝公钥，用于验证应答与通知的签名"
    )
    provider_public_key_id = models.CharField(
        "微信支付公钥 ID", max_length=64, blank=True, help_text="仅微信支付：PUB_KEY_ID_ 开头，与通知头 Wechatpay-Serial 对应"
    )
    api_v3_key = EncryptedTextField("APIv3 密钥", blank=True, help_text="仅微信支付：32 位，用于解密通知内容")
    gateway_url = models.URLField(
        "网关地址", max_length=300, blank=True, help_text="留空使用支付机构正式网关；仅开发与联调时填写沙箱地址"
    )
    updated_at = models.DateTimeField("更新时间", auto_now=True)

    class Meta:
        verbose_name = verbose_name_plural = "支付商户号"
        constraints = [
            models.UniqueConstraint(fields=["hospital", "provider"], name="one_merchant_per_hospital_provider"),
            models.UniqueConstraint(
                fields=["provider"], condition=models.Q(hospital=None), name="one_platform_merchant_per_provider"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_provider_display()} {self.mch_id}"


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
