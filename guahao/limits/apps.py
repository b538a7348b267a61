from django.apps import AppConfig


class LimitsConfig(AppConfig):
    name = "guahao.limits"
    label = "limits"
    verbose_name = "访问频率限制"
