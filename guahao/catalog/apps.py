from django.apps import AppConfig


class CatalogConfig(AppConfig):
    name = "guahao.catalog"
    label = "catalog"
    verbose_name = "医院与科室"
