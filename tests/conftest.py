"""Every test runs as if no LEASH_* setting were in the environment: a developer's
shell (LEASH_URL, LEASH_FSYNC ...) must not change what brokers and clients the
tests start do. The test suite's own knobs (LEASH_KILL9_CYCLES ...) stay."""

import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

from leash.broker.settings import SETTINGS
from leash.broker.sources import CONFIG_ENV
from leash.client import _env
from leash.client._admin_cli import ENV_DATA_DIR, ENV_SOCKET
from tests.tier import FAST, FAST_PROFILE, FAST_SHARE

# make test-fast: a quarter of each randomized test's examples (tests/tier.py)
settings.register_profile(FAST_PROFILE, max_examples=settings().max_examples // FAST_SHARE)
if FAST:
    settings.load_profile(FAST_PROFILE)

SETTING_VARIABLES = {setting.env for setting in SETTINGS} | {CONFIG_ENV, ENV_DATA_DIR, ENV_SOCKET}
SETTING_VARIABLES |= {
    _env.URL,
    _env.KEY_FILE,
    _env.KEY_ID,
    _env.TLS_CA,
    _env.TLS_CERT,
    _env.TLS_KEY,
}


@pytest.fixture(autouse=True, scope="session")
def no_leash_settings_from_the_environment() -> Iterator[None]:
    saved = {name: os.environ.pop(name) for name in SETTING_VARIABLES if name in os.environ}
    yield
    os.environ.update(saved)
