import os

from django.core.wsgi import get_wsgi_application

from guahao.environment import UnsafeStart, refuse

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "guahao.settings")
try:
    application = get_wsgi_application()
except UnsafeStart as exc:
    # Exits with the status that makes gunicorn halt ("App failed to load") instead of booting
    # the next worker into the same refusal.
    refuse(exc)
