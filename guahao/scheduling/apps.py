from django.apps import AppConfig


class SchedulingConfig(AppConfig):
    name = "guahao.scheduling"
    label = "scheduling"
    verbose_name = "排班与号源"
