from django.apps import AppConfig


class PaymentsConfig(AppConfig):
    name = "guahao.payments"
    label = "payments"
