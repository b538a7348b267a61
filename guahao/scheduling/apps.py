from django.apps import AppConfig


class SchedulingConfig(AppConfig):
    name = "guahao.scheduling"
    label = "scheduling"
