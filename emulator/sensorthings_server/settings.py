"""Django settings of the test SensorThings server: loopback only, its own SQLite file, no auth, no admin."""

import os
from uuid import UUID

SECRET_KEY = "airwatt-tests-only"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "airwatt.emulator.sensorthings_server.urls"
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "sensorthings.versions.v1_1",
    "sensorthings.versions.v1_1.backends.django",
    "sensorthings.versions.v1_1.extensions.dataarray",
]
MIDDLEWARE: list = []
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ["STA_DB"],
        # Requests run on several threads: wait for the write lock instead of failing with "database is locked".
        # WAL without an fsync per commit: still safe when the server process is killed (the tests do that).
        # IMMEDIATE: a transaction takes the write lock at BEGIN; a deferred one that reads, then writes, fails
        # at once with "database is locked" when another thread writes meanwhile (an HTTP 500).
        "OPTIONS": {"timeout": 30, "transaction_mode": "IMMEDIATE",
                    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL"},
    }
}
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LOGGING = {"version": 1, "disable_existing_loggers": False,
           "root": {"level": os.environ.get("STA_LOG_LEVEL", "WARNING")}}

SENSORTHINGS_V1_1_SERVICE_URL = os.environ["STA_URL"]
SENSORTHINGS_V1_1_BACKEND_ADAPTER = "sensorthings.versions.v1_1.backends.django.adapter.DjangoBackendAdapter"
SENSORTHINGS_V1_1_ID_TYPE = UUID
SENSORTHINGS_V1_1_ID_DELIMITER = "'"
SENSORTHINGS_V1_1_MAX_TOP = 10000
