from django.apps import AppConfig


class PatientsConfig(AppConfig):
    name = "guahao.patients"
    label = "patients"
    verbose_name = "账号与就诊人"

    def ready(self) -> None:
        # What ends a token early is recorded for every process (signals in tokens.py).
        from guahao.patients import tokens  # noqa: F401
