"""Django settings. Everything that differs between deployments comes from GUAHAO_* variables."""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("GUAHAO_VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)


def _env_bool(name: str, default: bool) -> bool:
    return os.environ.get(name, str(default)).strip().lower() in {"1", "true", "yes", "on"}


DEBUG = _env_bool("GUAHAO_DEBUG", False)
SECRET_KEY = os.environ.get("GUAHAO_SECRET_KEY") or "dev-only-not-secret-" + "x" * 32
ALLOWED_HOSTS = [h for h in os.environ.get("GUAHAO_ALLOWED_HOSTS", "127.0.0.1,localhost,testserver").split(",") if h]
CSRF_TRUSTED_ORIGINS = [o for o in os.environ.get("GUAHAO_CSRF_TRUSTED_ORIGINS", "").split(",") if o]

# Public base URL of this deployment: payment providers send their notifications here.
# Defaults to the address `guahao run` binds, so the sandbox reaches a development server wherever it runs.
_bind = os.environ.get("GUAHAO_BIND", "127.0.0.1:8000").replace("0.0.0.0", "127.0.0.1")
PUBLIC_URL = os.environ.get("GUAHAO_PUBLIC_URL", f"http://{_bind}").rstrip("/")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "guahao",
    "guahao.catalog",
    "guahao.scheduling",
    "guahao.patients",
    "guahao.booking",
    "guahao.payments",
    "guahao.his",
    "guahao.notifications",
    "guahao.policies",
]

MIDDLEWARE = [
    "guahao.logs.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

# Behind an HTTPS-terminating proxy (production): secure cookies, HSTS, and trust its header.
if _env_bool("GUAHAO_HTTPS", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = 31536000
    SECURE_SSL_REDIRECT = _env_bool("GUAHAO_SSL_REDIRECT", False)

ROOT_URLCONF = "guahao.urls"
WSGI_APPLICATION = "guahao.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- database ---------------------------------------------------------------------------------

DATABASE_URL = os.environ.get("GUAHAO_DATABASE_URL") or f"sqlite:///{VAR_DIR / 'guahao.sqlite3'}"
_db = dj_database_url.parse(DATABASE_URL)
# Lets several test runs share one machine without sharing a test database.
_TEST_SUFFIX = os.environ.get("GUAHAO_TEST_DB_SUFFIX", "")
if _db["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets readers run beside the one writer; IMMEDIATE takes the write lock at BEGIN, so two
    # writers queue on the busy timeout instead of failing with "database is locked" mid-transaction.
    _db["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;",
    }
    _db["TEST"] = {"NAME": str(VAR_DIR / f"test{_TEST_SUFFIX}.sqlite3")}
elif _db["ENGINE"] == "django.db.backends.postgresql":
    _db["OPTIONS"] = {
        "pool": {
            "min_size": int(os.environ.get("GUAHAO_DB_POOL_MIN", "2")),
            "max_size": int(os.environ.get("GUAHAO_DB_POOL_MAX", "20")),
            "timeout": 30,
        },
    }
    _db["CONN_MAX_AGE"] = 0
    _db["TEST"] = {"NAME": f"test_guahao{_TEST_SUFFIX}"}
DATABASES = {"default": _db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- i18n and time ----------------------------------------------------------------------------

LANGUAGE_CODE = "zh-hans"
TIME_ZONE = "Asia/Shanghai"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)

# --- personal data ----------------------------------------------------------------------------

# 32 hex chars each (16 bytes). Development generates keys under var/ on first use; production must
# set both (see README, "Configuration").
DATA_KEY = os.environ.get("GUAHAO_DATA_KEY", "")
INDEX_KEY = os.environ.get("GUAHAO_INDEX_KEY", "")

# --- adapters ---------------------------------------------------------------------------------

HIS_ADAPTER = os.environ.get("GUAHAO_HIS_ADAPTER", "local_pool")
SMS_CHANNEL = os.environ.get("GUAHAO_SMS_CHANNEL", "log")
REALNAME_VERIFIER = os.environ.get("GUAHAO_REALNAME_VERIFIER", "sandbox")
PAYMENT_PROVIDER = os.environ.get("GUAHAO_PAYMENT_PROVIDER", "sandbox")
SANDBOX_PAY_SECRET = os.environ.get("GUAHAO_SANDBOX_PAY_SECRET", "sandbox-merchant-key")

# --- logging ----------------------------------------------------------------------------------

LOG_LEVEL = os.environ.get("GUAHAO_LOG_LEVEL", "INFO")
LOG_FILE = os.environ.get("GUAHAO_LOG_FILE", "")
_handlers: dict = {
    "stdout": {"class": "logging.StreamHandler", "formatter": "json", "filters": ["pii"]},
}
if LOG_FILE:
    _handlers["file"] = {
        "class": "logging.FileHandler",
        "filename": LOG_FILE,
        "formatter": "json",
        "filters": ["pii"],
        "encoding": "utf-8",
    }
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"pii": {"()": "guahao.logs.MaskPersonalDataFilter"}},
    "formatters": {"json": {"()": "guahao.logs.JsonFormatter"}},
    "handlers": _handlers,
    "root": {"handlers": list(_handlers), "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # 4xx answers are expected traffic (a release burst is mostly 409s) and RequestIdMiddleware
        # already logs every request; keep django.request for 5xx.
        "django.request": {"level": "ERROR"},
    },
}
