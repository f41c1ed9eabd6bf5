"""Settings of the Hivemind hub, read from the environment (DESIGN §8).

Embedded defaults: SQLite in ``HIVEMIND_DATA_DIR`` (default ``var/`` in the repository), the
in-memory channel layer, a secret key generated on first run. Production sets ``DATABASE_URL``
(PostgreSQL), ``HIVEMIND_REDIS_URL`` (several hub processes), ``SECRET_KEY`` and
``ALLOWED_HOSTS``.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import dj_database_url

from executor_core.agents.isolation import INLINE, ISOLATIONS
from executor_core.types import TaskStatus
from hivemind_web.config import (
    env_bool,
    env_choice,
    env_command_agents,
    env_float,
    env_int,
    env_list,
    env_llm,
    env_rate,
    env_scheduler_profile,
    env_str,
    persistent_secret,
    private_file,
)

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env_str("HIVEMIND_DATA_DIR", str(BASE_DIR / "var")))

SECRET_KEY = env_str("SECRET_KEY") or persistent_secret(DATA_DIR / "secret_key")
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "axes",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "hivemind_web.hub",
    "hivemind_web.dashboard",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "hivemind_web.bad_requests.refuse_nul",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: it answers a locked-out login attempt.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "hivemind_web.urls"
ASGI_APPLICATION = "hivemind_web.asgi.application"

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
            ],
        },
    },
]

_SQLITE_URL = f"sqlite:///{DATA_DIR / 'hivemind.sqlite3'}"
DATABASES = {
    "default": dj_database_url.parse(env_str("DATABASE_URL") or _SQLITE_URL, conn_max_age=0)
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    # Created owner-only before SQLite opens it: it holds password and token hashes.
    # SQLite gives its -wal and -shm files the database file's mode.
    private_file(Path(DATABASES["default"]["NAME"]))
    # WAL lets readers work while one writer commits; IMMEDIATE takes the write lock at BEGIN,
    # so concurrent writers queue on the busy timeout instead of failing on lock upgrade.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# One request body limit for the API (both submission paths) and the forms, answered with a
# 413 that says so: a full batch of the largest inputs does not fit, ten of them do.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int(
    "HIVEMIND_MAX_REQUEST_BYTES", 32 * 1024 * 1024, minimum=64 * 1024
)

REDIS_URL = env_str("HIVEMIND_REDIS_URL")
# The default capacity (100 per channel) silently drops bursts (DESIGN §9): set it explicitly.
CHANNEL_CAPACITY = env_int("HIVEMIND_CHANNEL_CAPACITY", 5000, minimum=100)
# Groups forget members after this long; node sockets renew theirs, board tabs reconnect.
GROUP_EXPIRY = 7 * 24 * 3600
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [REDIS_URL],
                "capacity": CHANNEL_CAPACITY,
                "group_expiry": GROUP_EXPIRY,
                "prefix": env_str("HIVEMIND_REDIS_PREFIX", "hivemind"),
            },
        }
    }
else:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "hivemind_web.hub.layers.LocalChannelLayer",
            "CONFIG": {"capacity": CHANNEL_CAPACITY, "group_expiry": GROUP_EXPIRY},
        }
    }

# Production behind TLS (DESIGN §13): secure cookies, HSTS, and plain HTTP redirected. The
# health check stays on plain HTTP for load balancers that probe the backend directly.
HTTPS = env_bool("HIVEMIND_HTTPS", False)
TRUSTED_PROXY = env_bool("HIVEMIND_TRUSTED_PROXY", False)
if TRUSTED_PROXY:  # the proxy in front terminates TLS and says so; nothing else may
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = SECURE_SSL_REDIRECT = HTTPS
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SECURE_HSTS_SECONDS = env_int("HIVEMIND_HSTS_SECONDS", 365 * 24 * 3600 if HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("HIVEMIND_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env_bool("HIVEMIND_HSTS_PRELOAD", True)
# Turning one of them off is a decision: check --deploy need not repeat it.
SILENCED_SYSTEM_CHECKS = [
    check
    for check, kept in (
        ("security.W005", SECURE_HSTS_INCLUDE_SUBDOMAINS),
        ("security.W021", SECURE_HSTS_PRELOAD),
    )
    if not kept
]

# Throttles and throttled login share a cache: Redis when several hub processes serve.
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env_str("HIVEMIND_REDIS_PREFIX", "hivemind"),
        }
    }

AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # refuses a locked-out login before checking it
    "django.contrib.auth.backends.ModelBackend",
]
# After HIVEMIND_LOGIN_FAILURES wrong passwords from one address, logins from it are refused
# (429) for HIVEMIND_LOGIN_COOLOFF seconds; a good login clears the count.
AXES_FAILURE_LIMIT = env_int("HIVEMIND_LOGIN_FAILURES", 10, minimum=1)
AXES_COOLOFF_TIME = timedelta(seconds=env_int("HIVEMIND_LOGIN_COOLOFF", 900, minimum=1))
AXES_LOCKOUT_PARAMETERS = ["ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_CLIENT_IP_CALLABLE = "hivemind_web.hub.api.throttles.client_address"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "staticfiles"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
# Serve straight from the finders: no collectstatic step for the embedded hub.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "hivemind_web.hub.api.authentication.HashedTokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["hivemind_web.hub.api.permissions.CanViewHub"],
    "DEFAULT_PAGINATION_CLASS": "hivemind_web.hub.api.pagination.Pagination",
    "DEFAULT_PARSER_CLASSES": [
        "hivemind_web.hub.api.parsers.BoundedJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "hivemind_web.hub.api.errors.exception_handler",
    # Per client address, every attempt counted: guessing join tokens is slow.
    "DEFAULT_THROTTLE_RATES": {"register": env_rate("HIVEMIND_REGISTER_RATE", "10/min")},
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Hivemind API",
    "DESCRIPTION": "Submit SubAgent tasks, watch them, and manage Golem nodes and teams.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI and ReDoc from the hub's own static files: the docs work offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Three models have a "status": name each set of choices (check --deploy stays clean).
    "ENUM_NAME_OVERRIDES": {
        "NodeStatusEnum": "hivemind_web.hub.models.Node.Status",
        "TaskStatusEnum": [(status.value, status.value) for status in TaskStatus],
        "AttemptStatusEnum": "hivemind_web.hub.models.TaskAttempt.Status",
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("HIVEMIND_LOG_LEVEL", "INFO")},
    "loggers": {"django.channels.server": {"level": "WARNING"}, "axes": {"level": "WARNING"}},
}

# Hivemind's own knobs (DESIGN §8).
HIVEMIND = {
    "LOCAL_CONCURRENCY": env_int("HIVEMIND_LOCAL_CONCURRENCY", 4, minimum=1, maximum=1024),
    "LOCAL_QUEUE_LIMIT": env_int("HIVEMIND_LOCAL_QUEUE_LIMIT", 1000, minimum=1),
    "MAX_INPUT_BYTES": env_int("HIVEMIND_MAX_INPUT_BYTES", 256 * 1024, minimum=1),
    "MAX_OUTPUT_BYTES": env_int("HIVEMIND_MAX_OUTPUT_BYTES", 256 * 1024, minimum=1),
    # A task keeps (and its page tails) its last this many log lines.
    "MAX_LOG_LINES": env_int("HIVEMIND_MAX_LOG_LINES", 2000, minimum=1, maximum=100_000),
    "JOIN_TOKEN": env_str("HIVEMIND_JOIN_TOKEN"),
    # Lets a Prometheus server read /metrics with "Authorization: Bearer <token>" (unset: only
    # users with the view permission may).
    "METRICS_TOKEN": env_str("HIVEMIND_METRICS_TOKEN"),
    "HEARTBEAT_INTERVAL": env_float("HIVEMIND_HEARTBEAT_INTERVAL", 5.0, minimum=0.1),
    "HEARTBEAT_GRACE": env_float("HIVEMIND_HEARTBEAT_GRACE", 15.0, minimum=0.1),
    "LOST_AFTER": env_float("HIVEMIND_LOST_AFTER", 30.0, minimum=0.1),
    "ASSIGN_TIMEOUT": env_float("HIVEMIND_ASSIGN_TIMEOUT", 10.0, minimum=0.1),
    # On SIGTERM, how long local runs get to finish before they fail "hub stopped".
    "SHUTDOWN_GRACE": env_float("HIVEMIND_SHUTDOWN_GRACE", 30.0, minimum=0.0, maximum=3600.0),
    "PROGRESS_FLUSH": env_float("HIVEMIND_PROGRESS_FLUSH", 0.25, minimum=0.01),
    "BIND_RETRIES": env_int("HIVEMIND_BIND_RETRIES", 3, minimum=1),
    # Seconds a golem/auto task may wait for a feasible node (a team's or task's own wins).
    "SCHEDULE_WAIT": env_float("HIVEMIND_SCHEDULE_WAIT", 30.0, maximum=86_400.0),
    "LOAD_HISTORY_SECONDS": env_int("HIVEMIND_LOAD_HISTORY_SECONDS", 600, minimum=10),
    # How the hub's local executor runs agents that do not say (see executor_core.agents).
    "AGENT_ISOLATION": env_choice("HIVEMIND_AGENT_ISOLATION", INLINE, ISOLATIONS),
    "COMMAND_AGENTS": env_command_agents(),
    # The llm agent runs locally when the hub has HIVEMIND_LLM_* (never shown: holds the key).
    "LLM": env_llm(),
    # Which scheduler plugins decide and their score weights (None: every built-in one).
    "SCHEDULER_PROFILE": env_scheduler_profile("HIVEMIND_SCHEDULER_PROFILE"),
}
