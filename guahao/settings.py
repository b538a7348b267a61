"""Django settings. Everything that differs between deployments comes from GUAHAO_* variables."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import dj_database_url

from guahao.environment import DEV_SECRET_KEY, PRODUCTION

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("GUAHAO_VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)


def _env_bool(name: str, default: bool) -> bool:
    return os.environ.get(name, str(default)).strip().lower() in {"1", "true", "yes", "on"}


# "development" (make run, the tests) allows sandboxes, the log SMS channel and generated keys;
# anything else starts as production, which refuses all of them (guahao/environment.py).
ENV = os.environ.get("GUAHAO_ENV", "").strip() or PRODUCTION
DEBUG = _env_bool("GUAHAO_DEBUG", False)
SECRET_KEY = os.environ.get("GUAHAO_SECRET_KEY") or DEV_SECRET_KEY
ALLOWED_HOSTS = [h for h in os.environ.get("GUAHAO_ALLOWED_HOSTS", "127.0.0.1,localhost,testserver").split(",") if h]
CSRF_TRUSTED_ORIGINS = [o for o in os.environ.get("GUAHAO_CSRF_TRUSTED_ORIGINS", "").split(",") if o]

# Public base URL of this deployment: payment providers send their notifications here.
# Defaults to the address `guahao run` binds, so the sandbox reaches a development server wherever it runs.
_bind = os.environ.get("GUAHAO_BIND", "127.0.0.1:8000").replace("0.0.0.0", "127.0.0.1")
PUBLIC_URL = os.environ.get("GUAHAO_PUBLIC_URL", f"http://{_bind}").rstrip("/")

INSTALLED_APPS = [
    "guahao.console.apps.ConsoleAdminConfig",  # Django's admin on our ConsoleSite (password + TOTP)
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
    "guahao.wechat",
    "ninja",  # serves Swagger UI for /api/v1/docs from our static files, not a CDN
    "guahao.limits",
    "captcha",
    "guahao.web",
    "guahao.console",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "axes",
]

MIDDLEWARE = [
    "guahao.csp.ContentSecurityPolicyMiddleware",  # outermost: every answer, early ones (429) too
    # HSTS, nosniff, Referrer-Policy: on every answer too, the early 429s included.
    "django.middleware.security.SecurityMiddleware",
    "guahao.metrics.RequestMetricsMiddleware",  # latency per route, the early 429s included
    "guahao.admission.AdmissionMiddleware",  # release bursts: 429 at once when every permit is taken
    "guahao.logs.RequestIdMiddleware",
    "guahao.limits.middleware.BrowseLimitMiddleware",
    "django.middleware.gzip.GZipMiddleware",  # patient pages weigh < 150 KB as transferred
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",  # request.user.is_verified(): the console's second factor
    "django.contrib.messages.middleware.MessageMiddleware",
    "guahao.wechat.web.WechatSignInMiddleware",  # inside WeChat: 网页授权 once per session (openid sign-in)
    "guahao.console.middleware.ConsoleSessionMiddleware",  # 15 idle minutes; password older than 90 days
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "guahao.api.JsonMethodNotAllowedMiddleware",  # /api/: a wrong method gets JSON 405, not English text
    "guahao.web.errors.WebErrorMiddleware",  # patient pages: the error page, never a stack trace
    "axes.middleware.AxesMiddleware",  # last: turns a locked-out sign-in into the lockout page
]

# Set here rather than left to Django's default: no page's address (a search term, a hold id) is
# sent to another site in the Referer. nosniff is Django's default, named for the same reason.
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CONTENT_TYPE_NOSNIFF = True

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
                "guahao.web.context.web",
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
            # While the database is down (a restart) a request waits at most this long for a
            # connection and is answered 503, instead of hanging for the pool's default 30 s.
            "timeout": float(os.environ.get("GUAHAO_DB_POOL_TIMEOUT", "3")),
            # The pool reconnects with doubling pauses (1, 2, 4 … s) until this many seconds have
            # passed, then starts afresh on the next request: after a long outage it is back within
            # seconds of the database, not after a pause as long as the outage.
            "reconnect_timeout": 5,
        },
    }
    _db["CONN_MAX_AGE"] = 0
    # A restart kills every idle pooled connection: with the pool, Django then has psycopg_pool
    # check each one before handing it out, so the first requests after it do not fail on one.
    _db["CONN_HEALTH_CHECKS"] = True
    _db["TEST"] = {"NAME": f"test_guahao{_TEST_SUFFIX}"}
DATABASES = {"default": _db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- i18n and time ----------------------------------------------------------------------------

LANGUAGE_CODE = "zh-hans"
# Chinese only: the console and Django's own wording stay Chinese whatever the browser asks for.
LANGUAGES = [("zh-hans", "简体中文")]
# Our wording wins over the packages' own (django-axes' records, "按状态" instead of "以 状态").
LOCALE_PATHS = [BASE_DIR / "guahao" / "console" / "locale"]
TIME_ZONE = "Asia/Shanghai"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
# htmx and WeUI come from the npm registry (package.json, `npm ci` in make run/test); served from
# node_modules under their own prefixes, never copied into the repository.
NODE_MODULES = BASE_DIR / "node_modules"
STATICFILES_DIRS = [
    ("vendor/htmx", NODE_MODULES / "htmx.org" / "dist"),
    ("vendor/weui", NODE_MODULES / "weui" / "dist" / "style"),
]
# Compressed (gzip) copies served by whitenoise; hashed names too outside the tests, which run
# without collectstatic (pytest-env sets GUAHAO_STATIC_MANIFEST=false).
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if _env_bool("GUAHAO_STATIC_MANIFEST", True)
        else "whitenoise.storage.CompressedStaticFilesStorage"
    },
}
# Session cookie for the patient pages: server-side rows in the database (the default engine).
SESSION_COOKIE_AGE = 30 * 24 * 3600
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"

# The API takes small JSON bodies; a larger one is answered 413 {code, message} (guahao/api.py).
DATA_UPLOAD_MAX_MEMORY_SIZE = int(os.environ.get("GUAHAO_MAX_BODY_BYTES", str(64 * 1024)))

# --- the operator console (等保三级) ------------------------------------------------------------

# django-axes first: it refuses a locked-out account before the password is even checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
    {"NAME": "guahao.console.passwords.ComplexityValidator", "OPTIONS": {"min_length": 8}},
]
# 5 failed sign-ins (wrong password or wrong TOTP code) of one username, or from one address,
# lock it for 15 minutes; a success clears the count.
AXES_FAILURE_LIMIT = int(os.environ.get("GUAHAO_CONSOLE_MAX_FAILURES", "5"))
AXES_COOLOFF_TIME = dt.timedelta(minutes=int(os.environ.get("GUAHAO_CONSOLE_LOCK_MINUTES", "15")))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "console/locked.html"
AXES_CLIENT_IP_CALLABLE = "guahao.limits.clientip.client_ip"
AXES_VERBOSE = False
# Server-side idle limit of a console session, in minutes.
CONSOLE_IDLE_MINUTES = int(os.environ.get("GUAHAO_CONSOLE_IDLE_MINUTES", "15"))
OTP_TOTP_ISSUER = os.environ.get("GUAHAO_CONSOLE_TOTP_ISSUER", "挂号管理后台")

# --- personal data ----------------------------------------------------------------------------

# 32 hex chars each (16 bytes). Development generates keys under var/ on first use; production must
# set both (see README, "Configuration").
DATA_KEY = os.environ.get("GUAHAO_DATA_KEY", "")
INDEX_KEY = os.environ.get("GUAHAO_INDEX_KEY", "")
# Rotation: "id:hex,id:hex", the first current, the rest retired but still read (guahao/keyring.py,
# docs/operations.md "Rotating the personal-data keys"); the single keys above are key "1".
DATA_KEYS = os.environ.get("GUAHAO_DATA_KEYS", "")
INDEX_KEYS = os.environ.get("GUAHAO_INDEX_KEYS", "")

# --- adapters ---------------------------------------------------------------------------------

HIS_ADAPTER = os.environ.get("GUAHAO_HIS_ADAPTER", "local_pool")
SMS_CHANNEL = os.environ.get("GUAHAO_SMS_CHANNEL", "log")
# Aliyun 短信服务 (SendSms): the `sms` message channel and the `aliyun` sign-in code channel
# (docs/messages.md). Template codes per topic are set per hospital in the console (消息设置).
SMS_ENDPOINT = os.environ.get("GUAHAO_SMS_ENDPOINT", "https://dysmsapi.aliyuncs.com").rstrip("/")
SMS_ACCESS_KEY_ID = os.environ.get("GUAHAO_SMS_ACCESS_KEY_ID", "")
SMS_ACCESS_KEY_SECRET = os.environ.get("GUAHAO_SMS_ACCESS_KEY_SECRET", "")
SMS_SIGN_NAME = os.environ.get("GUAHAO_SMS_SIGN_NAME", "")  # when a hospital has none of its own
SMS_CODE_TEMPLATE = os.environ.get("GUAHAO_SMS_CODE_TEMPLATE", "")  # the sign-in code, variable ${code}
# The worker: one scheduler among all processes holds a lease in the database for this long and
# renews it every pass; when its process dies another worker takes over after at most this time.
SCHEDULER_LEASE_SECONDS = int(os.environ.get("GUAHAO_SCHEDULER_LEASE_SECONDS", "30"))
# How long a worker's claim on one outbox event lasts: an event whose worker died is handled by
# another after this time. Keep it well above the slowest handler (its outside calls' timeouts).
EVENT_LEASE_SECONDS = int(os.environ.get("GUAHAO_EVENT_LEASE_SECONDS", "60"))
# Which scheduled jobs run (names in guahao/notifications/scheduler.py); unset means all of them.
SCHEDULER_JOBS = (
    [name.strip() for name in os.environ["GUAHAO_SCHEDULER_JOBS"].split(",") if name.strip()]
    if "GUAHAO_SCHEDULER_JOBS" in os.environ
    else None
)
# Release bursts (放号): what the hot paths read on every request (schedule answers, a session's
# booking facts, a hospital's HIS connection, "this slot is taken") is reused within a process for
# at most this many seconds, so every change shows within it. 0 turns the reuse off.
FRESH_SECONDS = float(os.environ.get("GUAHAO_FRESH_SECONDS", "1"))
# Outside channels for patients' messages (the in-app list always gets them); each hospital turns
# 公众号 and SMS on in the console (消息设置). `log` writes masked messages to the log.
MESSAGE_CHANNELS = [
    name.strip()
    for name in os.environ.get("GUAHAO_MESSAGE_CHANNELS", "wechat,sms,log" if ENV == "development" else "wechat,sms").split(",")
    if name.strip()
]
REALNAME_VERIFIER = os.environ.get("GUAHAO_REALNAME_VERIFIER", "sandbox")
# Payments: merchant accounts per hospital live in the database (console: 支付商户号). In development a
# hospital without one pays through the sandbox gateway at this address (`guahao run` starts it),
# whose merchant keys are generated into this file on first use. Production never uses either.
PAY_SANDBOX_URL = os.environ.get("GUAHAO_PAY_SANDBOX_URL", "http://127.0.0.1:9200").rstrip("/")
PAY_SANDBOX_KEYS = Path(os.environ.get("GUAHAO_PAY_SANDBOX_KEYS") or VAR_DIR / "pay-sandbox-keys.json")
# In development the demo hospital's 公众号 is the WeChat simulator at this address (`guahao run`
# starts it; see docs/wechat.md). Production talks to WeChat at the address set per hospital.
WECHAT_SIMULATOR_URL = os.environ.get("GUAHAO_WECHAT_SIMULATOR_URL", "http://127.0.0.1:9300").rstrip("/")
# The `http` SMS channel and real-name verifier: signed JSON POSTs (guahao/signed_post.py).
SMS_URL = os.environ.get("GUAHAO_SMS_URL", "")
SMS_SECRET = os.environ.get("GUAHAO_SMS_SECRET", "")
SMS_TIMEOUT = float(os.environ.get("GUAHAO_SMS_TIMEOUT", "5"))
REALNAME_URL = os.environ.get("GUAHAO_REALNAME_URL", "")
REALNAME_SECRET = os.environ.get("GUAHAO_REALNAME_SECRET", "")
REALNAME_TIMEOUT = float(os.environ.get("GUAHAO_REALNAME_TIMEOUT", "5"))

# --- abuse limits -----------------------------------------------------------------------------

# Rate limits are shared by every process: in Redis when set (redis://127.0.0.1:6379/0), else in
# the database. Redis is only a gate here, never the record of anything.
REDIS_URL = os.environ.get("GUAHAO_REDIS_URL", "")
REDIS_PREFIX = os.environ.get("GUAHAO_REDIS_PREFIX", "guahao:") + "rl:"
# Admission control (guahao/admission.py): requests executing at once per process; past that, and
# after waiting at most ADMISSION_WAIT_MS for a permit, 429 with Retry-After. On 2 cores a process
# serves about 100 requests/s whatever runs at once (the GIL), so 4 keep the CPU busy while a hold
# waits on the database; a wait of 50 ms lets the short line clear (4 permits free every ~10 ms)
# and keeps an admitted hold near 100 ms. `guahao run` starts more threads than permits
# (GUAHAO_WEB_THREADS) so refusals are not stuck behind gunicorn's queue. 0 turns it off.
ADMISSION_ACTIVE = int(os.environ.get("GUAHAO_ADMISSION_ACTIVE", "4"))
ADMISSION_WAIT_MS = int(os.environ.get("GUAHAO_ADMISSION_WAIT_MS", "50"))
# Requests that may wait for a permit at once; past that, 429 without waiting. Default: the threads
# that `guahao run` starts beyond the permits (16 − 4).
ADMISSION_QUEUE = int(os.environ.get("GUAHAO_ADMISSION_QUEUE", "12"))
ADMISSION_RETRY_AFTER = int(os.environ.get("GUAHAO_ADMISSION_RETRY_AFTER", "1"))  # seconds
# Requests one client (bearer token, else address) or one /24 may have holding or waiting for a
# permit in a process; the next is refused at once, so a flood cannot take every permit. 0 = off.
ADMISSION_SHARE = int(os.environ.get("GUAHAO_ADMISSION_SHARE", "2"))
# Proxies (addresses or networks, comma-separated) whose X-Forwarded-For is believed.
TRUSTED_PROXIES = [p for p in os.environ.get("GUAHAO_TRUSTED_PROXIES", "").split(",") if p.strip()]
# Who may read /metrics (addresses or networks, comma-separated); anyone else gets 404.
METRICS_ALLOW = [a for a in os.environ.get("GUAHAO_METRICS_ALLOW", "127.0.0.1,::1").split(",") if a.strip()]
# /bench/json, the trivial JSON view bench/browse.py measures as its baseline: off except in benchmarks.
BENCH_BASELINE = _env_bool("GUAHAO_BENCH_BASELINE", False)

# Each rule: comma-separated windows "count/period" (s, m, h, d; "30/10m"), or "off".
# Override one with GUAHAO_LIMIT_<RULE>, e.g. GUAHAO_LIMIT_SMS_CODE_IP="20/h,60/d".
_LIMIT_DEFAULTS = {
    "sms_code_ip": "10/h,30/d",  # sign-in codes asked for from one address
    "sms_code_net": "30/h,120/d",  # … from one /24 (IPv4) or /64 (IPv6)
    "login_ip": "30/10m,100/d",  # sign-in attempts (right or wrong code) from one address
    "hold_account": "4/10m,12/d",  # slots held by one account (the release rule caps live holds too)
    "hold_ip": "6/10m,30/d",  # … from one address: a family, not a bot farm
    "patient_add_account": "5/h,10/d",  # visiting patients an account tries to add
    "patient_add_ip": "5/h,10/d",  # … from one address
    "browse_ip": "600/m",  # search and schedule pages: never met by a person
    "captcha_ip": "3/h",  # sign-in codes from one address before the image captcha is asked
}
LIMITS = {
    rule: os.environ.get(f"GUAHAO_LIMIT_{rule.upper()}", default)
    for rule, default in _LIMIT_DEFAULTS.items()
}
# Sign-in codes per phone: seconds between two codes, codes a day, wrong tries before a code dies.
SMS_RESEND_SECONDS = int(os.environ.get("GUAHAO_SMS_RESEND_SECONDS", "60"))
SMS_DAILY_LIMIT = int(os.environ.get("GUAHAO_SMS_DAILY_LIMIT", "10"))
SMS_MAX_WRONG_TRIES = int(os.environ.get("GUAHAO_SMS_MAX_WRONG_TRIES", "5"))
# An image captcha before sign-in codes, once an address passes `captcha_ip` (off by default).
CAPTCHA_ENABLED = _env_bool("GUAHAO_CAPTCHA", False)
CAPTCHA_LENGTH = 4
CAPTCHA_TIMEOUT = 5  # minutes

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
        "axes": {"level": "WARNING"},  # the console's sign-ins are in the audit log
    },
}
