"""Payments and refunds in the console: read-only (money moves only through the services)."""

from __future__ import annotations

from django.contrib import admin

from guahao.console.modeladmin import ReadOnlyConsoleAdmin
from guahao.payments.models import Payment, Refund


@admin.register(Payment)
class PaymentAdmin(ReadOnlyConsoleAdmin):
    hospital_field = "hold__session__hospital"
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
class RefundAdmin(ReadOnlyConsoleAdmin):
    hospital_field = "payment__hold__session__hospital"
    list_display = ("refund_no", "payment_out_trade_no", "amount_fen", "state", "reason", "created_at", "succeeded_at")
    list_filter = ("state",)
    search_fields = ("refund_no", "payment__out_trade_no")
    date_hierarchy = "created_at"
    ordering = ("-id",)
    list_select_related = ("payment",)

    @admin.display(description="商户订单号", ordering="payment__out_trade_no")
    def payment_out_trade_no(self, obj: Refund) -> str:
        return obj.payment.out_trade_no
