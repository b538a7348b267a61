from django.apps import AppConfig


class GuahaoConfig(AppConfig):
    """The project itself: home of the commands that span areas (run, worker), the start-up rules
    of development and production, and deploy checks."""

    name = "guahao"
    label = "guahao"
    verbose_name = "挂号"

    def ready(self) -> None:
        from django.conf import settings
        from django.db.backends.signals import connection_created

        from guahao import checks  # noqa: F401  (registers the deploy checks)
        from guahao.environment import check_start
        from guahao.files import create_sqlite_database, restrict_sqlite_files

        # Every process (web, worker, each command) passes here before it touches the database.
        check_start(settings)
        create_sqlite_database(settings.DATABASES["default"])
        connection_created.connect(restrict_sqlite_files, dispatch_uid="guahao.files.restrict_sqlite_files")
