"""Payments and refunds in the console. Money moves only through the services: here staff see the
books (in 元), work the queue of refunds the provider refused (retry under the same refund number,
or record that the money went back another way), and read the `guahao ledger-check` findings."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import models, transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, path, reverse

from guahao import clock
from guahao.booking.services import staff
from guahao.console.display import yuan
from guahao.console.modeladmin import ConsoleModelAdmin, ReadOnlyConsoleAdmin
from guahao.console.models import AuditEntry
from guahao.console.selectors import hospital_ids_of
from guahao.console.services import record_audit
from guahao.errors import GuahaoError
from guahao.payments import services
from guahao.payments.channels import PaymentChannel
from guahao.payments.models import Discrepancy, MerchantAccount, Payment, ReconciliationRun, Refund
from guahao.payments.reconciliation import services as reconciliation

LEDGER_PERMISSION = "payments.view_ledger_findings"

PROVIDER_LABELS = {
    "wechatpay": "微信支付",
    "alipay": "支付宝",
    "wechat": "微信支付",
    "unionpay": "银联",
}


def _local(moment) -> str:
    return f"{clock.local(moment):%Y-%m-%d %H:%M}" if moment else "—"


def _channel_label(code: str) -> str:
    return PaymentChannel(code).label if code in PaymentChannel.values else (code or "—")


class ProviderFilter(admin.SimpleListFilter):
    title = "支付机构"
    parameter_name = "provider"

    def lookups(self, request: HttpRequest, model_admin) -> list[tuple[str, str]]:
        names = (
            model_admin.get_queryset(request)
            .order_by()
            .values_list("provider", flat=True)
            .distinct()
        )
        return [(name, PROVIDER_LABELS.get(name, name)) for name in sorted(names)]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return queryset.filter(provider=self.value()) if self.value() else queryset


class ChannelFilter(admin.SimpleListFilter):
    title = "支付渠道"
    parameter_name = "channel"

    def lookups(self, request: HttpRequest, model_admin) -> list[tuple[str, str]]:
        return list(PaymentChannel.choices)

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return queryset.filter(channel=self.value()) if self.value() else queryset


class RefundedFilter(admin.SimpleListFilter):
    title = "退款情况"
    parameter_name = "refunded"

    def lookups(self, request: HttpRequest, model_admin) -> list[tuple[str, str]]:
        return [("none", "未退款"), ("partly", "部分退款"), ("fully", "已退款")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        if value == "none":
            return queryset.filter(refunded_fen=0)
        if value == "partly":
            return queryset.filter(refunded_fen__gt=0, refunded_fen__lt=models.F("amount_fen"))
        if value == "fully":
            return queryset.filter(refunded_fen__gt=0, refunded_fen=models.F("amount_fen"))
        return queryset


@admin.register(Payment)
class PaymentAdmin(ReadOnlyConsoleAdmin):
    hospital_field = "hold__session__hospital"
    list_display = (
        "out_trade_no",
        "provider_label",
        "channel_label",
        "insurance",
        "amount_yuan",
        "refunded_yuan",
        "state_label",
        "created",
        "paid",
    )
    list_filter = ("state", RefundedFilter, ProviderFilter, ChannelFilter, "insurance")
    search_fields = ("out_trade_no", "provider_trade_no")
    search_help_text = "按商户订单号或支付机构交易号查找"
    date_hierarchy = "created_at"
    ordering = ("-id",)
    list_select_related = False
    fields = (
        "out_trade_no",
        "provider_trade_no",
        "provider_label",
        "channel_label",
        "insurance",
        "amount_yuan",
        "refunded_yuan",
        "state_label",
        "hold",
        "created",
        "paid",
        "expires",
    )
    readonly_fields = fields
    change_list_template = "console/orders/payment_change_list.html"

    @admin.display(description="支付机构", ordering="provider")
    def provider_label(self, obj: Payment) -> str:
        return PROVIDER_LABELS.get(obj.provider, obj.provider)

    @admin.display(description="支付渠道", ordering="channel")
    def channel_label(self, obj: Payment) -> str:
        return _channel_label(obj.channel)

    @admin.display(description="金额", ordering="amount_fen")
    def amount_yuan(self, obj: Payment) -> str:
        return yuan(obj.amount_fen)

    @admin.display(description="已退金额", ordering="refunded_fen")
    def refunded_yuan(self, obj: Payment) -> str:
        return yuan(obj.refunded_fen)

    @admin.display(description="状态", ordering="state")
    def state_label(self, obj: Payment) -> str:
        if obj.state == Payment.State.PAID and obj.refunded_fen > 0:
            return "已退款" if obj.refunded_fen >= obj.amount_fen else "部分退款"
        return obj.get_state_display()

    @admin.display(description="创建时间", ordering="created_at")
    def created(self, obj: Payment) -> str:
        return _local(obj.created_at)

    @admin.display(description="支付时间", ordering="paid_at")
    def paid(self, obj: Payment) -> str:
        return _local(obj.paid_at)

    @admin.display(description="支付截止")
    def expires(self, obj: Payment) -> str:
        return _local(obj.expires_at)

    def get_urls(self):
        return [
            path(
                "ledger/",
                self.admin_site.admin_view(self.ledger_view),
                name="payments_payment_ledger",
            ),
            *super().get_urls(),
        ]

    def changelist_view(self, request: HttpRequest, extra_context=None):
        extra = {
            **(extra_context or {}),
            "can_view_ledger": request.user.has_perm(LEDGER_PERMISSION),
        }
        return super().changelist_view(request, extra)

    def ledger_view(self, request: HttpRequest) -> HttpResponse:
        """账务核对: the findings of `guahao ledger-check` now, those of this staff member's hospitals
        only, each naming its row with a link to it."""
        if not request.user.has_perm(LEDGER_PERMISSION):
            raise PermissionDenied
        from guahao.ledger import find_violations

        findings = _scoped_findings(find_violations(), hospital_ids_of(request.user))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "账务核对（ledger-check）",
            "findings": findings,
            "checked_at": clock.local_now(),
        }
        return TemplateResponse(request, "console/orders/ledger.html", context)


# --- the ledger findings as staff read them -----------------------------------------------------------

FINDING_LABELS = {
    "slot_live_holds": "号源同时有多个有效锁号",
    "slot_active_registrations": "号源同时有多张有效挂号单",
    "slot_state_mismatch": "号源状态与锁号、挂号单不一致",
    "hold_without_registration": "锁号已成功但没有挂号单",
    "registration_on_unsucceeded_hold": "挂号单所属锁号未成功",
    "hold_winning_payment": "锁号的支付记录有误",
    "hold_not_expired": "锁号已过期但未释放",
    "hold_registering_overdue": "挂号中超时未处理",
    "registration_after_suspension": "停诊后仍产生挂号",
    "registration_not_cancelled_after_suspension": "停诊后挂号未取消退费",
    "payment_refund_exceeds_amount": "已退金额超过支付金额",
    "payment_refunded_mismatch": "已退金额与退款记录不符",
    "payment_refunds_exceed_paid": "退款合计超过支付金额",
    "payment_refund_unpaid": "未支付的订单有退款",
    "payment_order_open": "过期订单未关闭",
    "payment_order_of_dead_hold": "锁号已结束但订单未关闭",
    "payment_registered_and_refunded": "既已挂号又已退款",
    "payment_partly_refunded": "仅部分退款且无挂号",
    "payment_unsettled": "已支付但既未挂号也未退款",
    "refund_failed": "退款失败，待人工处理",
    "refund_stuck": "退款长时间未完成",
    "refund_manual_unexplained": "线下退款缺少处理人或说明",
    "his_cancel_pending": "HIS 尚未取消已退费的挂号",
}

# db_table → (app_label, model_name, lookup from the row to its hospital id)
_ROW_MODELS: dict[str, tuple[str, str, str]] = {
    "scheduling_slot": ("scheduling", "slot", "session__hospital_id"),
    "scheduling_session": ("scheduling", "session", "hospital_id"),
    "booking_hold": ("booking", "hold", "session__hospital_id"),
    "booking_registration": ("booking", "registration", "session__hospital_id"),
    "payments_payment": ("payments", "payment", "hold__session__hospital_id"),
    "payments_refund": ("payments", "refund", "payment__hold__session__hospital_id"),
}
_ROW = re.compile(r"([a-z_]+)#(\d+)")


@dataclass(frozen=True)
class Finding:
    kind: str
    label: str
    row_label: str
    url: str
    message: str


def _scoped_findings(violations: list, hospital_ids: set[int] | None) -> list[Finding]:
    """Each violation with its Chinese heading and a link to its row; for staff of some hospitals
    only, those whose row (or, for an outbox job, the hold it names) belongs to one of them."""
    from django.apps import apps

    def owner_ref(violation) -> tuple[str, int] | None:
        for table, pk in _ROW.findall(violation.row) + _ROW.findall(violation.message):
            if table in _ROW_MODELS:
                return table, int(pk)
        return None

    owners = {id(v): owner_ref(v) for v in violations}
    wanted: dict[str, set[int]] = defaultdict(set)
    for ref in owners.values():
        if ref is not None:
            wanted[ref[0]].add(ref[1])
    hospital_of: dict[tuple[str, int], int] = {}
    for table, ids in wanted.items():
        app_label, model_name, lookup = _ROW_MODELS[table]
        model = apps.get_model(app_label, model_name)
        for pk, hospital_id in model._default_manager.filter(pk__in=ids).values_list("pk", lookup):
            hospital_of[(table, pk)] = hospital_id
    findings = []
    for violation in violations:
        ref = owners[id(violation)]
        if hospital_ids is not None and (ref is None or hospital_of.get(ref) not in hospital_ids):
            continue
        findings.append(
            Finding(
                kind=violation.kind,
                label=FINDING_LABELS.get(violation.kind, violation.kind),
                row_label=_row_label(violation.row),
                url=_row_url(violation.row),
                message=violation.message,
            )
        )
    return findings


def _row_label(row: str) -> str:
    match = _ROW.fullmatch(row)
    if match is None or match.group(1) not in _ROW_MODELS:
        return row
    from django.apps import apps

    app_label, model_name, _ = _ROW_MODELS[match.group(1)]
    return f"{apps.get_model(app_label, model_name)._meta.verbose_name} #{match.group(2)}"


def _row_url(row: str) -> str:
    match = _ROW.fullmatch(row)
    if match is None or match.group(1) not in _ROW_MODELS:
        return ""
    app_label, model_name, _ = _ROW_MODELS[match.group(1)]
    try:
        return reverse(f"admin:{app_label}_{model_name}_change", args=[match.group(2)])
    except NoReverseMatch:
        return ""


# --- refunds ------------------------------------------------------------------------------------------


class RefundStateFilter(admin.SimpleListFilter):
    """The list opens on the queue of refunds that need staff (退款失败); a search looks at all."""

    title = "状态"
    parameter_name = "state"
    DEFAULT = Refund.State.FAILED.value

    def __init__(self, request: HttpRequest, params, model, model_admin) -> None:
        self._searching = bool(request.GET.get("q", "").strip())
        super().__init__(request, params, model, model_admin)

    def lookups(self, request: HttpRequest, model_admin) -> list[tuple[str, str]]:
        return [*Refund.State.choices, ("all", "全部")]

    def value(self) -> str | None:
        value = super().value()
        if value is None and not self._searching:
            return self.DEFAULT
        return value

    def choices(self, changelist):
        current = self.value() or "all"
        for lookup, title in self.lookup_choices:
            yield {
                "selected": current == lookup,
                "query_string": changelist.get_query_string({self.parameter_name: lookup}),
                "display": title,
            }

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        if value in Refund.State.values:
            return queryset.filter(state=value)
        return queryset


class ManualRefundForm(forms.Form):
    note = forms.CharField(
        label="退回方式与说明（如：窗口现金退还，收据号）",
        max_length=200,
        widget=forms.Textarea(attrs={"rows": 3}),
        error_messages={"required": "请填写退回方式与说明"},
    )


@admin.register(Refund)
class RefundAdmin(ReadOnlyConsoleAdmin):
    hospital_field = "payment__hold__session__hospital"
    list_display = (
        "refund_no",
        "payment_out_trade_no",
        "amount_yuan",
        "state",
        "reason",
        "last_error",
        "handled_by",
        "created",
        "finished",
    )
    list_filter = (RefundStateFilter,)
    search_fields = ("refund_no", "payment__out_trade_no")
    search_help_text = "按退款单号或商户订单号查找"
    date_hierarchy = "created_at"
    ordering = ("-id",)
    list_select_related = ("payment",)
    actions = ("retry_failed", "mark_paid_back_by_hand")
    fields = (
        "refund_no",
        "payment_out_trade_no",
        "amount_yuan",
        "state",
        "reason",
        "last_error",
        "created",
        "finished",
        "handled_by",
        "handled_note",
    )
    readonly_fields = fields

    @admin.display(description="商户订单号", ordering="payment__out_trade_no")
    def payment_out_trade_no(self, obj: Refund) -> str:
        return obj.payment.out_trade_no

    @admin.display(description="金额", ordering="amount_fen")
    def amount_yuan(self, obj: Refund) -> str:
        return yuan(obj.amount_fen)

    @admin.display(description="申请时间", ordering="created_at")
    def created(self, obj: Refund) -> str:
        return _local(obj.created_at)

    @admin.display(description="完成时间", ordering="succeeded_at")
    def finished(self, obj: Refund) -> str:
        return _local(obj.succeeded_at)

    def has_handle_failed_refund_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("payments.handle_failed_refund")

    def _audit(self, request: HttpRequest, refund: Refund, action: str, **fields) -> None:
        record_audit(
            request=request, action=action, obj=refund, hospital=self._hospital_of(refund), **fields
        )

    @admin.action(description="按原退款单号重试", permissions=["handle_failed_refund"])
    def retry_failed(self, request: HttpRequest, queryset: QuerySet) -> None:
        """Send each selected failed refund to the provider again, under its own number."""
        for refund in queryset.select_related("payment__hold__session__hospital"):
            try:
                retried = services.retry_refund(refund_no=refund.refund_no)
            except GuahaoError as exc:
                self._audit(
                    request, refund, AuditEntry.Action.REFUND_RETRY,
                    result=AuditEntry.Result.FAILURE, detail=exc.message,
                )  # fmt: skip
                self.message_user(
                    request, f"退款单 {refund.refund_no}：{exc.message}", messages.ERROR
                )
                continue
            failed_again = retried.state == Refund.State.FAILED
            self._audit(
                request, refund, AuditEntry.Action.REFUND_RETRY,
                before={"state": refund.state}, after={"state": retried.state},
                result=AuditEntry.Result.FAILURE if failed_again else AuditEntry.Result.SUCCESS,
                detail=f"按原退款单号 {refund.refund_no} 重试：{retried.get_state_display()}"
                + (f"（{retried.last_error}）" if failed_again and retried.last_error else ""),
            )  # fmt: skip
            if failed_again:
                self.message_user(
                    request,
                    f"退款单 {refund.refund_no} 重试后仍为退款失败：{retried.last_error}",
                    messages.ERROR,
                )
            else:
                self.message_user(
                    request,
                    f"退款单 {refund.refund_no} 已重新提交，当前状态：{retried.get_state_display()}",
                    messages.SUCCESS,
                )

    @admin.action(description="标记为已通过其他方式退回", permissions=["handle_failed_refund"])
    def mark_paid_back_by_hand(
        self, request: HttpRequest, queryset: QuerySet
    ) -> HttpResponse | None:
        """A confirmation page asks how the money went back; then each selected failed refund is
        closed as 已线下退款 (its registration cancelled), audited in the same transaction."""
        refunds = list(queryset.select_related("payment__hold__session__hospital"))
        form = ManualRefundForm(request.POST if "apply" in request.POST else None)
        if not form.is_valid():
            context = {
                **self.admin_site.each_context(request),
                "opts": self.model._meta,
                "title": "标记为已通过其他方式退回",
                "form": form,
                "rows": [
                    {
                        "pk": r.pk,
                        "refund_no": r.refund_no,
                        "out_trade_no": r.payment.out_trade_no,
                        "amount": yuan(r.amount_fen),
                        "error": r.last_error,
                    }
                    for r in refunds
                ],
                "back_url": reverse("admin:payments_refund_changelist"),
            }
            return TemplateResponse(request, "console/orders/refund_manual.html", context)
        note = form.cleaned_data["note"].strip()
        for refund in refunds:

            def audit(_done: Refund, refund: Refund = refund) -> None:
                self._audit(
                    request, refund, AuditEntry.Action.REFUND_MANUAL,
                    before={"state": refund.state}, after={"state": Refund.State.MANUAL.value},
                    detail=f"已通过其他方式退回 {yuan(refund.amount_fen)}：{note}",
                )  # fmt: skip

            try:
                staff.record_manual_refund(
                    refund_no=refund.refund_no,
                    staff_username=request.user.get_username(),
                    note=note,
                    record=audit,
                )
            except GuahaoError as exc:
                self._audit(
                    request, refund, AuditEntry.Action.REFUND_MANUAL,
                    result=AuditEntry.Result.FAILURE, detail=exc.message,
                )  # fmt: skip
                self.message_user(
                    request, f"退款单 {refund.refund_no}：{exc.message}", messages.ERROR
                )
                continue
            self.message_user(
                request, f"退款单 {refund.refund_no} 已标记为已线下退款", messages.SUCCESS
            )
        return None


# --- reconciliation (对账) ------------------------------------------------------------------------


def _yuan_or_dash(fen: int | None) -> str:
    return "—" if fen is None else yuan(fen)


def _source_label(source: str) -> str:
    """ "wechatpay:3" → 微信支付（商户 3）; "alipay:sandbox" → 支付宝（沙箱）; "his-2" → HIS 挂号清单."""
    if source.startswith("his-"):
        return "HIS 挂号清单"
    provider, _, merchant_key = source.partition(":")
    label = PROVIDER_LABELS.get(provider, provider)
    if not merchant_key:
        return label
    return f"{label}（沙箱）" if merchant_key == "sandbox" else f"{label}（商户 {merchant_key}）"


class ResolvedFilter(admin.SimpleListFilter):
    title = "处理情况"
    parameter_name = "resolved"

    def lookups(self, request: HttpRequest, model_admin) -> list[tuple[str, str]]:
        return [("no", "未处理"), ("yes", "已处理")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() == "no":
            return queryset.filter(resolved_at__isnull=True)
        if self.value() == "yes":
            return queryset.filter(resolved_at__isnull=False)
        return queryset


class ResolveDiscrepancyForm(forms.Form):
    note = forms.CharField(
        label="处理说明（如：已补退款，退款单号；已联系支付机构核实）",
        max_length=200,
        widget=forms.Textarea(attrs={"rows": 3}),
        error_messages={"required": "请填写处理说明"},
    )


@admin.register(Discrepancy)
class DiscrepancyAdmin(ReadOnlyConsoleAdmin):
    """The finance office's queue of reconciliation differences. Rows of a known hospital are that
    hospital's staff's; a provider-only row of no known hospital is seen by superusers only."""

    hospital_field = "hospital"
    list_display = (
        "day",
        "source",
        "kind",
        "out_trade_no",
        "out_refund_no",
        "our_amount",
        "provider_amount",
        "detail",
        "resolved",
        "resolved_by",
        "resolution_note",
    )
    list_filter = (ResolvedFilter, "kind", "provider")
    search_fields = ("out_trade_no", "out_refund_no")
    search_help_text = "按商户订单号、退款单号或挂号单号查找"
    date_hierarchy = "day"
    ordering = ("-day", "kind", "id")
    actions = ("mark_resolved",)
    fields = (
        "day",
        "source",
        "kind",
        "out_trade_no",
        "out_refund_no",
        "hospital",
        "our_amount",
        "provider_amount",
        "detail",
        "found",
        "resolved",
        "resolved_by",
        "resolution_note",
    )
    readonly_fields = fields

    @admin.display(description="对账来源", ordering="provider")
    def source(self, obj: Discrepancy) -> str:
        return _source_label(obj.provider)

    @admin.display(description="本系统金额", ordering="our_amount_fen")
    def our_amount(self, obj: Discrepancy) -> str:
        return _yuan_or_dash(obj.our_amount_fen)

    @admin.display(description="对方金额", ordering="provider_amount_fen")
    def provider_amount(self, obj: Discrepancy) -> str:
        return _yuan_or_dash(obj.provider_amount_fen)

    @admin.display(description="发现时间", ordering="found_at")
    def found(self, obj: Discrepancy) -> str:
        return _local(obj.found_at)

    @admin.display(description="处理时间", ordering="resolved_at")
    def resolved(self, obj: Discrepancy) -> str:
        return _local(obj.resolved_at) if obj.resolved_at else "未处理"

    def has_resolve_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("payments.change_discrepancy")

    @admin.action(description="标记已处理", permissions=["resolve"])
    def mark_resolved(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        """A page asks how each selected difference was handled; each is then closed with that note
        and audited in the same transaction. Already handled rows are left as they are."""
        items = list(queryset.select_related("hospital"))
        form = ResolveDiscrepancyForm(request.POST if "apply" in request.POST else None)
        if not form.is_valid():
            context = {
                **self.admin_site.each_context(request),
                "opts": self.model._meta,
                "title": "标记已处理",
                "form": form,
                "rows": [
                    {
                        "pk": d.pk,
                        "day": d.day.isoformat(),
                        "kind": d.get_kind_display(),
                        "out_trade_no": d.out_trade_no,
                        "out_refund_no": d.out_refund_no,
                        "ours": _yuan_or_dash(d.our_amount_fen),
                        "theirs": _yuan_or_dash(d.provider_amount_fen),
                        "detail": d.detail,
                    }
                    for d in items
                ],
                "back_url": reverse("admin:payments_discrepancy_changelist"),
            }
            return TemplateResponse(request, "console/payments/discrepancy_resolve.html", context)
        note = form.cleaned_data["note"].strip()
        done = 0
        for item in items:
            if item.resolved_at is not None:
                self.message_user(
                    request,
                    f"差异 {item} 已于 {_local(item.resolved_at)} 处理，未重复标记",
                    messages.WARNING,
                )
                continue
            with transaction.atomic():
                resolved = reconciliation.mark_resolved(
                    discrepancy_id=item.pk, staff_username=request.user.get_username(), note=note
                )
                record_audit(
                    request=request, action=AuditEntry.Action.OTHER, obj=resolved, hospital=item.hospital,
                    before={"resolved": False}, after={"resolved": True},
                    detail=f"对账差异标记已处理（{item.get_kind_display()} {item.out_refund_no or item.out_trade_no}）：{note}",
                )  # fmt: skip
            done += 1
        if done:
            self.message_user(request, f"已标记 {done} 条对账差异为已处理", messages.SUCCESS)
        return None


@admin.register(ReconciliationRun)
class ReconciliationRunAdmin(ReadOnlyConsoleAdmin):
    """Runs belong to no single hospital: every finance officer sees the day's totals, not rows."""

    hospital_field = None
    list_display = (
        "day",
        "source",
        "status",
        "bill_rows",
        "matched",
        "discrepancies",
        "started",
        "finished",
        "error",
    )
    list_filter = ("status", "provider")
    date_hierarchy = "day"
    ordering = ("-day", "provider")
    fields = (
        "day",
        "source",
        "status",
        "bill_rows",
        "matched",
        "discrepancies",
        "bill_sha1",
        "started",
        "finished",
        "error",
    )
    readonly_fields = fields

    @admin.display(description="对账来源", ordering="provider")
    def source(self, obj: ReconciliationRun) -> str:
        return _source_label(obj.provider)

    @admin.display(description="开始时间", ordering="started_at")
    def started(self, obj: ReconciliationRun) -> str:
        return _local(obj.started_at)

    @admin.display(description="结束时间", ordering="finished_at")
    def finished(self, obj: ReconciliationRun) -> str:
        return _local(obj.finished_at)


# --- merchant accounts (支付商户号) -----------------------------------------------------------------

SECRET_MASK = "******"  # what the audit log shows of a new key


class MerchantAccountForm(forms.ModelForm):
    """Keys are typed, never shown back: an empty field keeps the stored one. Each is parsed before
    it is saved, so a pasted half key is refused here, not at the first patient's payment."""

    gateway_url = forms.URLField(
        label="网关地址",
        max_length=300,
        required=False,
        assume_scheme="https",
        help_text="留空使用支付机构正式网关；仅开发与联调时填写沙箱地址",
    )
    new_private_key = forms.CharField(
        label="商户私钥",
        required=False,
        widget=forms.Textarea(attrs={"rows": 4, "autocomplete": "off"}),
        help_text="PEM 格式（-----BEGIN PRIVATE KEY-----）；保存后不再显示，留空则不修改",
    )
    new_api_v3_key = forms.CharField(
        label="APIv3 密钥",
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="仅微信支付：32 个字符；保存后不再显示，留空则不修改",
    )

    class Meta:
        model = MerchantAccount
        fields = (
            "hospital",
            "provider",
            "enabled",
            "app_id",
            "mch_id",
            "serial_no",
            "provider_public_key",
            "provider_public_key_id",
            "gateway_url",
        )

    # Set by MerchantAccountAdmin.get_form: may this staff member set the platform's account?
    platform_allowed = False

    def clean(self) -> dict:
        from guahao.payments.merchants import MerchantKeyError, check_keys

        cleaned = super().clean()
        if (
            "hospital" in cleaned
            and cleaned["hospital"] is None
            and self.instance.pk is None
            and not self.platform_allowed
        ):
            # The platform's account takes the money of every hospital without one of its own.
            raise forms.ValidationError(
                {"hospital": "请选择医院；平台统一收款账户只能由平台管理员设置"}
            )
        if cleaned.get("new_private_key"):
            self.instance.private_key = cleaned["new_private_key"].strip()
        if cleaned.get("new_api_v3_key"):
            self.instance.api_v3_key = cleaned["new_api_v3_key"]
        for name in (
            "provider",
            "app_id",
            "mch_id",
            "serial_no",
            "provider_public_key",
            "provider_public_key_id",
            "gateway_url",
        ):
            if name in cleaned:
                setattr(self.instance, name, cleaned[name])
        try:
            check_keys(self.instance)
        except MerchantKeyError as exc:
            raise forms.ValidationError({exc.field: exc.message}) from exc
        return cleaned


@admin.register(MerchantAccount)
class MerchantAccountAdmin(ConsoleModelAdmin):
    form = MerchantAccountForm
    hospital_field = "hospital"
    list_display = (
        "hospital_label",
        "provider",
        "mch_id",
        "app_id",
        "enabled",
        "keys_state",
        "gateway_label",
        "updated_at",
    )
    list_filter = ("provider", "enabled")
    list_select_related = ("hospital",)
    actions = ("test_merchant",)
    fieldsets = (
        (None, {"fields": ("hospital", "provider", "enabled")}),
        ("商户信息", {"fields": ("app_id", "mch_id", "serial_no", "provider_public_key_id")}),
        (
            "密钥",
            {"fields": ("new_private_key", "new_api_v3_key", "provider_public_key", "keys_state")},
        ),
        ("联调", {"fields": ("gateway_url",)}),
    )

    def get_form(
        self,
        request: HttpRequest,
        obj: MerchantAccount | None = None,
        change: bool = False,
        **kwargs,
    ):
        form = super().get_form(request, obj, change=change, **kwargs)
        form.platform_allowed = hospital_ids_of(request.user) is None
        return form

    def get_readonly_fields(
        self, request: HttpRequest, obj: MerchantAccount | None = None
    ) -> tuple[str, ...]:
        # An account that took money stays with its hospital and provider: refunds go through it.
        return ("hospital", "provider", "keys_state") if obj is not None else ("keys_state",)

    @admin.display(description="医院", ordering="hospital__name")
    def hospital_label(self, obj: MerchantAccount) -> str:
        return str(obj.hospital) if obj.hospital_id else "平台统一收款"

    @admin.display(description="密钥")
    def keys_state(self, obj: MerchantAccount | None) -> str:
        if obj is None or not obj.private_key:
            return "未设置"
        if obj.provider == MerchantAccount.Provider.WECHATPAY and not obj.api_v3_key:
            return "缺少 APIv3 密钥"
        return "已设置"

    @admin.display(description="网关")
    def gateway_label(self, obj: MerchantAccount) -> str:
        return obj.gateway_url or "正式环境"

    def save_model(
        self, request: HttpRequest, obj: MerchantAccount, form: MerchantAccountForm, change: bool
    ) -> None:
        # The audit row records the form's fields before and after: new keys show as a mask.
        for name in ("new_private_key", "new_api_v3_key"):
            if form.cleaned_data.get(name):
                form.cleaned_data[name] = SECRET_MASK
        super().save_model(request, obj, form, change)

    @admin.action(
        description="测试商户号（查询一笔不存在的订单，验证签名与应答）", permissions=["change"]
    )
    def test_merchant(self, request: HttpRequest, queryset: QuerySet[MerchantAccount]) -> None:
        from guahao.payments.merchants import check_merchant

        for account in queryset.select_related("hospital"):
            ok, outcome = check_merchant(account)
            record_audit(
                request=request,
                action=AuditEntry.Action.OTHER,
                obj=account,
                hospital=account.hospital,
                result=AuditEntry.Result.SUCCESS if ok else AuditEntry.Result.FAILURE,
                detail=f"测试支付商户号：{outcome}",
            )
            self.message_user(
                request, f"{account}：{outcome}", level=messages.SUCCESS if ok else messages.ERROR
            )
