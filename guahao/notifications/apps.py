from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "guahao.notifications"
    label = "notifications"
