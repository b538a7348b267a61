from django.apps import AppConfig


class PoliciesConfig(AppConfig):
    name = "guahao.policies"
    label = "policies"
