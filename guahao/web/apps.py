from django.apps import AppConfig


class WebConfig(AppConfig):
    name = "guahao.web"
    label = "web"
    verbose_name = "患者 H5 页面"
