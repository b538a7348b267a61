from django.apps import AppConfig


class HisConfig(AppConfig):
    name = "guahao.his"
    label = "his"
