from django.apps import AppConfig


class BookingConfig(AppConfig):
    name = "guahao.booking"
    label = "booking"
    verbose_name = "挂号与锁号"
