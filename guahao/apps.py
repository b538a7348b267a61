from django.apps import AppConfig


class GuahaoConfig(AppConfig):
    """The project itself: home of the commands that span areas (run)."""

    name = "guahao"
    label = "guahao"
    verbose_name = "挂号"
