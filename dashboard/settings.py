"""Django settings; everything that differs between hosts comes from the environment."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

# The engine's state directories (as engine.config reads them); the dashboard keeps
# its own files next to the engine's so one root holds a whole Berth instance.
ENGINE_ROOT = Path(os.environ.get("BERTH_ROOT", "/var/lib/berth"))
ENGINE_RUN = Path(os.environ.get("BERTH_RUN", "/run/berth"))
DASHBOARD_STATE = ENGINE_ROOT / "dashboard"  # secret key, SQLite database
DASHBOARD_RUN = ENGINE_RUN / "dashboard"  # Redis socket, serve's lock
SECRET_KEY_FILE = DASHBOARD_STATE / "secret_key"


def _secret_key() -> str:
    """BERTH_SECRET_KEY, else the key `python -m dashboard.serve` stored (0600) on first
    start. Settings never write files: a process without either (pytest, a one-off
    manage.py command) gets a throwaway key, fine for anything that outlives no process."""
    if key := os.environ.get("BERTH_SECRET_KEY"):
        return key
    try:
        return SECRET_KEY_FILE.read_text().strip()
    except FileNotFoundError:
        return secrets.token_urlsafe(50)


SECRET_KEY = _secret_key()
DEBUG = os.environ.get("BERTH_DEBUG", "0") == "1"
ALLOWED_HOSTS = os.environ.get("BERTH_ALLOWED_HOSTS", "127.0.0.1,localhost").split(",")

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "channels",
    "dashboard.core",
    "dashboard.accounts",
    "dashboard.containers",
    "dashboard.images",
    "dashboard.resources",
    "dashboard.live",
    "dashboard.topology",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "dashboard.core.middleware.HtmxLoginRedirectMiddleware",
    # Every page needs a log-in unless its view says otherwise (only /login/ does).
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "dashboard.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
WSGI_APPLICATION = "dashboard.wsgi.application"
ASGI_APPLICATION = "dashboard.asgi.application"


def _database(url: str | None) -> dict:
    """BERTH_DATABASE_URL: ``sqlite:////abs/path.sqlite3`` (the default is SQLite under
    the engine root). Other engines need their driver installed: say so plainly."""
    if not url:
        path = os.environ.get("BERTH_DASHBOARD_DB", str(DASHBOARD_STATE / "db.sqlite3"))
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": path}
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        # sqlite:////var/lib/x.db -> /var/lib/x.db ; sqlite:///rel.db -> rel.db
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": parts.path[1:] or ":memory:"}
    if parts.scheme in ("postgres", "postgresql"):
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": parts.path.lstrip("/"),
            "USER": parts.username or "",
            "PASSWORD": parts.password or "",
            "HOST": parts.hostname or "",
            "PORT": str(parts.port or ""),
        }
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured(
        f"BERTH_DATABASE_URL {url!r}: use sqlite:////path or postgresql://user:pw@host/db"
    )


DATABASES = {"default": _database(os.environ.get("BERTH_DATABASE_URL"))}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 10},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# Front-end libraries come from npm (package.json, installed by scripts/setup.sh) and
# are served straight from node_modules under static/vendor/<package>/...
STATICFILES_DIRS = [BASE_DIR / "static", ("vendor", BASE_DIR / "node_modules")]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LOGIN_URL = "/login/"
# Sessions and CSRF: cookies not readable by scripts, not sent cross-site, and marked
# Secure when the dashboard sits behind TLS (BERTH_SECURE_COOKIES=1; the default
# server listens on plain http://127.0.0.1, where Secure cookies would never be sent).
# Cookies are per host, not per port: names of our own, so another app on 127.0.0.1
# cannot overwrite them.
SESSION_COOKIE_NAME = "berth_sessionid"
CSRF_COOKIE_NAME = "berth_csrftoken"
LOGIN_REDIRECT_URL = "/"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_AGE = int(os.environ.get("BERTH_SESSION_AGE", 12 * 3600))
CSRF_COOKIE_HTTPONLY = True  # pages carry the token (base.html's hx-headers)
CSRF_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = os.environ.get("BERTH_SECURE_COOKIES") == "1"
if SESSION_COOKIE_SECURE:
    # Behind a TLS proxy that sets it (and only then): requests count as https.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
CSRF_TRUSTED_ORIGINS = [
    o for o in os.environ.get("BERTH_CSRF_TRUSTED_ORIGINS", "").split(",") if o
]  # e.g. https://berth.example.org behind a TLS proxy
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"

# Redis: the Celery broker and result store, and the channel layer. `serve` starts a
# private redis-server on this socket unless BERTH_REDIS_URL points at another one.
# Nothing connects at import time, so tests that do not use Redis need none.
REDIS_SOCKET = DASHBOARD_RUN / "redis.sock"
REDIS_URL = os.environ.get("BERTH_REDIS_URL") or f"unix://{REDIS_SOCKET}"


def _celery_url(url: str) -> str:
    """redis-py/channels spell a socket `unix:///path`; kombu and Celery `redis+socket:///path`."""
    return "redis+socket://" + url.removeprefix("unix://") if url.startswith("unix://") else url


CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [REDIS_URL]},
    }
}

CELERY_BROKER_URL = _celery_url(REDIS_URL)
CELERY_RESULT_BACKEND = _celery_url(REDIS_URL)
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_EXPIRES = 24 * 3600
# Results record the task's name, worker and queue: what a tasks page shows.
CELERY_RESULT_EXTENDED = True
# Two queues, each with its own worker, so a build never delays a stop: lifecycle
# actions go to `quick` (the default), long operations are routed to `long` by name
# (the queues themselves are declared in dashboard/celery.py).
CELERY_TASK_DEFAULT_QUEUE = "quick"
# Long tasks are named "long.<what>" (e.g. long.pull); everything else is quick.
CELERY_TASK_ROUTES = {"long.*": {"queue": "long"}}
# A worker process reserves one message at a time: a long task does not hold back
# others it prefetched.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TRACK_STARTED = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
