from django.apps import AppConfig


class PatientsConfig(AppConfig):
    name = "guahao.patients"
    label = "patients"
    verbose_name = "账号与就诊人"
