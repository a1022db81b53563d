"""Where ``leash serve`` takes each setting from: flag > environment > file > default.

``resolve`` layers the sources over the defaults of ``settings.SETTINGS``:
the TOML file named by ``--config`` (or ``LEASH_CONFIG``), parsed with
``tomllib``, then the ``LEASH_*`` variables, then the flags given. Every
value is checked by its setting whatever its source, and an error names the
source and the setting (``leash.toml: port: must be between 0 and 65535``).
A key the file does not know is refused with its name (but for its
``[schedules.NAME]`` tables: broker/schedule_config.py); an environment
variable that is empty counts as unset, and ``LEASH_*`` variables that name
no setting are left alone (clients read some of them). ``server_config``
puts the values where each setting's ``field`` says.
"""

import difflib
import tomllib
from collections.abc import Mapping
from typing import Any, NamedTuple

import msgspec

from leash.broker.core.config import CoreConfig
from leash.broker.core.limits import limits_record
from leash.broker.core.records import QueueLimitsSet
from leash.broker.errors import BrokerError
from leash.broker.schedule_config import SCHEDULES_TABLE, ScheduleConfigError, schedules_of
from leash.broker.server.config import ServerConfig
from leash.broker.server.limits import Limits
from leash.broker.settings import BY_NAME, ENV_PREFIX, SETTINGS, Setting, SettingError
from leash.protocol.admin import AddSchedule, SetQueueLimits
from leash.protocol.limits import IDLE_TIMEOUT_HEARTBEATS

CONFIG_ENV = ENV_PREFIX + "CONFIG"
QUEUES_TABLE = "queues"  # [queues.NAME]: a queue's limits, given at each start
QUEUE_KEYS = ("concurrency", "per-key", "rate", "rate-interval-ms")
QUEUE_LIMITS = "queue_limits"  # where resolve puts them among the values
FILE_MAX_BYTES = 1 << 20


class ConfigError(BrokerError):
    """A setting that cannot be used; the message names its source."""


class Resolved(NamedTuple):
    values: dict[str, Any]  # by Setting.dest
    origins: dict[str, str]  # by Setting.dest: "default", "file PATH", "env LEASH_X", "flag"


def resolve(
    flags: Mapping[str, Any], environ: Mapping[str, str], config_path: str | None
) -> Resolved:
    """Every setting's value and where it came from. ``flags`` holds only the flags given."""
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for setting in SETTINGS:
        values[setting.dest] = _default(setting)
        origins[setting.dest] = "default"
    path = config_path if config_path is not None else environ.get(CONFIG_ENV) or None
    values[QUEUE_LIMITS] = ()
    values[SCHEDULES_TABLE] = ()
    if path is not None:
        table = load_file(path)
        for setting, value in settings_of(table, path).items():
            values[setting.dest], origins[setting.dest] = value, f"file {path}"
        values[QUEUE_LIMITS] = queue_limits_of(table.get(QUEUES_TABLE, {}), path)
        values[SCHEDULES_TABLE] = schedules_in(table, path)
    for setting in SETTINGS:
        text = environ.get(setting.env, "")
        if text.strip():
            values[setting.dest] = _from_env(setting, text)
            origins[setting.dest] = f"env {setting.env}"
    for dest, value in flags.items():
        values[dest], origins[dest] = value, "flag"
    return Resolved(values, origins)


def _default(setting: Setting) -> Any:
    if setting.many:
        return []
    return None if setting.default is None else setting.check(setting.default)


def _from_env(setting: Setting, text: str) -> Any:
    try:
        if setting.many:
            return [setting.parse(item) for item in text.split(",") if item.strip()]
        return setting.parse(text)
    except SettingError as error:
        raise ConfigError(f"{setting.env}={text!r}: {error}") from None


def read_file(path: str) -> dict[Setting, Any]:
    """The settings a TOML file gives, checked (its queue and schedule
    tables too); unknown keys are refused by name."""
    table = load_file(path)
    queue_limits_of(table.get(QUEUES_TABLE, {}), path)
    schedules_in(table, path)
    return settings_of(table, path)


def read_schedules(path: str) -> tuple[AddSchedule, ...]:
    """The file's ``[schedules.NAME]`` tables (broker/schedule_config.py)."""
    return schedules_in(load_file(path), path)


def schedules_in(table: dict[str, Any], path: str) -> tuple[AddSchedule, ...]:
    try:
        return schedules_of(table.get(SCHEDULES_TABLE, {}))
    except ScheduleConfigError as error:
        raise ConfigError(f"{path}: {error}") from None


def load_file(path: str) -> dict[str, Any]:
    """The TOML file as a table."""
    try:
        with open(path, "rb") as file:
            data = file.read(FILE_MAX_BYTES + 1)
    except OSError as error:
        raise ConfigError(f"cannot read the config file {path}: {error.strerror}") from None
    if len(data) > FILE_MAX_BYTES:
        raise ConfigError(f"{path}: larger than {FILE_MAX_BYTES} bytes")
    try:
        return tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None


def settings_of(table: dict[str, Any], path: str) -> dict[Setting, Any]:
    """The settings of a file's table, checked (its [queues] and [schedules]
    tables are ``queue_limits_of``'s and ``schedules_in``'s)."""
    found: dict[Setting, Any] = {}
    for key, value in table.items():
        if key in (QUEUES_TABLE, SCHEDULES_TABLE):  # queue_limits_of, schedules_in
            continue
        setting = BY_NAME.get(key)
        if setting is None:
            raise ConfigError(f"{path}: unknown setting {key!r}{_suggestion(key)}")
        try:
            found[setting] = _from_file(setting, value)
        except SettingError as error:
            raise ConfigError(f"{path}: {key}: {error}") from None
    return found


def _suggestion(key: str) -> str:
    close = difflib.get_close_matches(key.replace("_", "-"), BY_NAME, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _from_file(setting: Setting, value: object) -> Any:
    if setting.many:
        if not isinstance(value, list):
            raise SettingError(f"expected a list of {_type_name(setting)}, not {_shown(value)}")
        return [_one_from_file(setting, item) for item in value]
    return _one_from_file(setting, value)


def _one_from_file(setting: Setting, value: object) -> Any:
    # bool is a subclass of int: a switch takes true/false only, a number never takes them.
    if type(value) is not setting.type:
        raise SettingError(f"expected {_type_name(setting)}, not {_shown(value)}")
    return value if setting.type is bool else setting.check(value)


def _type_name(setting: Setting) -> str:
    return {int: "a whole number", bool: "true or false", str: "a string"}[setting.type]


def _shown(value: object) -> str:
    return f"{type(value).__name__} {value!r}"


def queue_limits_of(queues: object, path: str) -> tuple[QueueLimitsSet, ...]:
    """The limits of the file's [queues.NAME] tables, checked: each key is
    a limit of ``leash limit`` (concurrency, per-key, rate with
    rate-interval-ms), a whole number in its bounds; unknown keys refused."""
    if not isinstance(queues, dict):
        raise ConfigError(f"{path}: queues: expected tables [queues.NAME], not {_shown(queues)}")
    found = []
    for name, limits in queues.items():
        where = f"{path}: queues.{name}"
        if not isinstance(limits, dict):
            raise ConfigError(f"{where}: expected a table, not {_shown(limits)}")
        try:
            request = msgspec.convert(
                {"op": "set_queue_limits", "rid": 0, "queue": name, **_fields(limits, where)},
                SetQueueLimits,
            )
        except msgspec.ValidationError as error:
            raise ConfigError(f"{where}: {error}") from None
        found.append(limits_record(request))
    return tuple(found)


def _fields(limits: dict[str, Any], where: str) -> dict[str, Any]:
    fields = {}
    for key, value in limits.items():
        if key not in QUEUE_KEYS:
            raise ConfigError(f"{where}: unknown key {key!r} (one of {', '.join(QUEUE_KEYS)})")
        if type(value) is not int:
            raise ConfigError(f"{where}: {key}: expected a whole number, not {_shown(value)}")
        fields[key.replace("-", "_")] = value
    return fields


def server_config(values: Mapping[str, Any]) -> ServerConfig:
    """The ``ServerConfig`` the values make: each goes where its setting's ``field`` says."""
    parts: dict[str, dict[str, Any]] = {"": {}, "core": {}, "limits": {}}
    for setting in SETTINGS:
        value = values[setting.dest]
        if not setting.field or value is None:
            continue
        if setting.many:
            value = tuple(value)
        elif setting.scale != 1:
            value *= setting.scale
        part, _, name = setting.field.rpartition(".")
        parts[part][name] = value
    limits = parts["limits"]
    if "idle_timeout_ms" not in limits:
        heartbeat_ms = parts["core"].get("heartbeat_ms", CoreConfig().heartbeat_ms)
        limits["idle_timeout_ms"] = IDLE_TIMEOUT_HEARTBEATS * heartbeat_ms
    return ServerConfig(
        **parts[""],
        core=CoreConfig(**parts["core"]),
        limits=Limits(**parts["limits"]),
        queue_limits=values.get(QUEUE_LIMITS, ()),
        schedules=values.get(SCHEDULES_TABLE, ()),
    )


def describe(resolved: Resolved) -> str:
    """The settings that are not defaults, and where each came from: one log line."""
    given = [
        f"{setting.name} ({origin})"
        for setting in SETTINGS
        if (origin := resolved.origins[setting.dest]) != "default"
    ]
    return "settings: " + (", ".join(given) if given else "all defaults")
