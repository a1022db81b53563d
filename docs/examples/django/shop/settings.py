"""The example project's settings: Django's few, and Leash's.

The Leash settings are plain settings the project reads itself
(``shop.tasks`` and the ``leashworker`` command). The broker comes from
``LEASH_URL`` in the environment, as every Leash client reads it; a key
file and TLS files go in the URL's options
(``leashs://host:7420?ca=ca.pem&key_file=keys.toml``).
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "only-for-the-example")
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["shop"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("SHOP_DATABASE", BASE_DIR / "db.sqlite3"),
    }
}
USE_TZ = True
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "leash": {"handlers": ["console"], "level": "INFO"},
        "shop": {"handlers": ["console"], "level": "INFO"},
    },
}

# Leash: the broker, the queues this project's workers take jobs from, how many at once.
LEASH_URL = os.environ.get("LEASH_URL", "leash://127.0.0.1:7420")
LEASH_QUEUES = ["mail", "default"]
LEASH_CONCURRENCY = int(os.environ.get("LEASH_CONCURRENCY", "4"))
