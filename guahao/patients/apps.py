from django.apps import AppConfig


class PatientsConfig(AppConfig):
    name = "guahao.patients"
    label = "patients"
