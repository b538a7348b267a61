from django.apps import AppConfig


class PaymentsConfig(AppConfig):
    name = "guahao.payments"
    label = "payments"
    verbose_name = "支付与退款"
