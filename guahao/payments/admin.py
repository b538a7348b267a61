"""Payments and refunds in the console: read-only (money moves only through the services)."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from guahao.payments.models import Payment, Refund


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Payment)
class PaymentAdmin(ReadOnlyAdmin):
    list_display = (
        "out_trade_no",
        "provider",
        "channel",
        "insurance",
        "amount_fen",
        "refunded_fen",
        "state",
        "created_at",
        "paid_at",
    )
    list_filter = ("state", "provider", "channel", "insurance")
    search_fields = ("out_trade_no", "provider_trade_no")
    date_hierarchy = "created_at"
    ordering = ("-id",)
    list_select_related = False


@admin.register(Refund)
class RefundAdmin(ReadOnlyAdmin):
    list_display = ("refund_no", "payment_out_trade_no", "amount_fen", "state", "reason", "created_at", "succeeded_at")
    list_filter = ("state",)
    search_fields = ("refund_no", "payment__out_trade_no")
    date_hierarchy = "created_at"
    ordering = ("-id",)
    list_select_related = ("payment",)

    @admin.display(description="商户订单号", ordering="payment__out_trade_no")
    def payment_out_trade_no(self, obj: Refund) -> str:
        return obj.payment.out_trade_no
