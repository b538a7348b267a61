from django.apps import AppConfig


class GuahaoConfig(AppConfig):
    """The project itself: home of the commands that span areas (run, worker) and deploy checks."""

    name = "guahao"
    label = "guahao"
    verbose_name = "挂号"

    def ready(self) -> None:
        from guahao import checks  # noqa: F401  (registers the deploy checks)
