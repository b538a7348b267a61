from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class ConsoleAdminConfig(admin_apps.AdminConfig):
    """Django's admin with our site as the default one: every `@admin.register` lands on the
    console, which demands a second factor and writes the audit log."""

    default = False  # named explicitly in INSTALLED_APPS, in django.contrib.admin's place
    default_site = "guahao.console.site.ConsoleSite"


class ConsoleConfig(AppConfig):
    """The operator console: staff, their hospitals and roles, sign-in rules, the audit log."""

    default = True
    name = "guahao.console"
    label = "console"
    verbose_name = "后台管理"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from guahao.console import signals  # noqa: F401  (audits sign-in, sign-out, failures)

        post_migrate.connect(_sync_roles, sender=self, dispatch_uid="console.sync_roles")


def _sync_roles(sender, using: str = "default", verbosity: int = 1, **kwargs) -> None:
    """After every migrate (and test flush): the role groups match guahao/console/roles.py. The
    permissions of apps listed after this one are created first, so the table can name them."""
    from django.apps import apps
    from django.contrib.auth.management import create_permissions

    from guahao.console.services import sync_roles

    for app_config in apps.get_app_configs():
        create_permissions(app_config, verbosity=0, using=using)
    sync_roles()
