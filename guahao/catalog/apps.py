from django.apps import AppConfig


class CatalogConfig(AppConfig):
    name = "guahao.catalog"
    label = "catalog"
