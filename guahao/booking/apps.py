from django.apps import AppConfig


class BookingConfig(AppConfig):
    name = "guahao.booking"
    label = "booking"
