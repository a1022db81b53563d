"""The settings of ``leash serve``: one table makes the flags, the LEASH_* variables,
the --config file's keys and the table in docs/configuration.md."""

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from leash.broker import cli
from leash.broker.core.config import CoreConfig
from leash.broker.core.records import QueueLimitsSet
from leash.broker.journal.group_commit import FsyncPolicy
from leash.broker.server.config import ServerConfig
from leash.broker.settings import SETTINGS, Setting
from leash.broker.sources import ConfigError, read_file, resolve, server_config

ROOT = Path(__file__).resolve().parents[2]
NOT_SETTINGS = {"-h", "--help", "--config"}


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_settings", ROOT / "docs" / "gen_settings.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def example(setting: Setting) -> Any:
    """A valid value of the setting that is not its default, as a TOML file gives it."""
    if setting.type is bool:
        return True
    if setting.many:
        return [setting.low, setting.high]
    if setting.choices:
        return next(choice for choice in reversed(setting.choices) if choice != setting.default)
    if setting.type is int:
        assert setting.low is not None and setting.high is not None
        return setting.low if setting.low != setting.default else setting.high
    if setting.flag == "--fsync":
        return "interval:50"
    return f"/srv/{setting.name}"


def env_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true"
    if isinstance(value, list):
        return ",".join(str(item) for item in value)
    return str(value)


def reached(setting: Setting, values: dict[str, Any]) -> Any:
    """Where the setting's value ended up: its ServerConfig field, or the process's value."""
    if not setting.field:
        return values[setting.dest]
    config: Any = server_config(values)
    for part in setting.field.split("."):
        config = getattr(config, part)
    return config


def expected(setting: Setting, value: Any) -> Any:
    if setting.many:
        return tuple(value)
    if setting.convert is not None:
        return setting.convert(value)
    return value * setting.scale if setting.type is int else value


def test_the_table_in_the_docs_is_the_one_the_settings_make() -> None:
    gen = load_generator()
    _, current, _ = gen.split_document((ROOT / "docs" / "configuration.md").read_text())
    assert current == gen.render(), "run: .venv/bin/python docs/gen_settings.py --write"


def test_every_flag_of_serve_is_a_row_of_the_table_and_every_row_a_flag() -> None:
    serve = cli.parser()._subparsers._group_actions[0].choices["serve"]  # type: ignore[union-attr]
    flags = {option for action in serve._actions for option in action.option_strings}
    assert flags - NOT_SETTINGS == {setting.flag for setting in SETTINGS}


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda setting: setting.name)
def test_each_setting_reaches_the_broker_from_the_file_and_from_the_environment(
    setting: Setting, tmp_path: Path
) -> None:
    value = example(setting)
    default = reached(setting, resolve({}, {}, None).values)
    assert default != expected(setting, value)
    path = tmp_path / "leash.toml"
    path.write_text(f"{setting.name} = {toml_value(value)}\n")
    from_file = resolve({}, {}, str(path))
    assert reached(setting, from_file.values) == expected(setting, value)
    assert from_file.origins[setting.dest] == f"file {path}"
    from_env = resolve({}, {setting.env: env_text(value)}, None)
    assert reached(setting, from_env.values) == expected(setting, value)
    assert from_env.origins[setting.dest] == f"env {setting.env}"


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(str(item) for item in value) + "]"
    return str(value)


def test_a_flag_wins_over_the_environment_which_wins_over_the_file(tmp_path: Path) -> None:
    path = tmp_path / "leash.toml"
    path.write_text('port = 7001\nfsync = "never"\nmax-connections = 11\nadmin-uid = [5]\n')
    env = {"LEASH_PORT": "7002", "LEASH_FSYNC": "interval:20", "LEASH_ADMIN_UID": "6,7"}
    config = cli.config_of(["--config", str(path), "--port", "7003"], env)
    assert config.port == 7003  # flag
    assert config.fsync == FsyncPolicy("interval", 20)  # environment over file
    assert config.admin_uids == (6, 7)  # environment over file, whole
    assert config.limits.max_connections == 11  # file over default
    assert config.data_dir == ServerConfig().data_dir  # default
    env["LEASH_CONFIG"] = str(path)
    assert cli.config_of([], env).limits.max_connections == 11  # the file from LEASH_CONFIG


def test_defaults_alone_make_the_default_config() -> None:
    assert cli.config_of([]) == ServerConfig()


def test_the_idle_timeout_follows_a_heartbeat_from_any_source() -> None:
    config = cli.config_of([], {"LEASH_HEARTBEAT_MS": "1000"})
    assert config.core == CoreConfig(heartbeat_ms=1000)
    assert config.limits.idle_timeout_ms == 3000


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "max_connections = 5\n",
            "unknown setting 'max_connections' (did you mean 'max-connections'?)",
        ),
        ("[limits]\nmax-connections = 5\n", "unknown setting 'limits'"),
        ("port = 99999\n", "port: must be between 0 and 65535, not 99999"),
        ('port = "7420"\n', "port: expected a whole number, not str '7420'"),
        ("port = true\n", "port: expected a whole number, not bool True"),
        ("repair-truncate = 1\n", "repair-truncate: expected true or false, not int 1"),
        ('fsync = "sometimes"\n', "fsync: --fsync must be always, never or interval:MS"),
        ("admin-uid = 5\n", "admin-uid: expected a list of a whole number, not int 5"),
        ('log-level = "loud"\n', "log-level: must be one of debug, info, warning, not 'loud'"),
        ("port = \n", "not valid TOML"),
        ("queues = 5\n", "queues: expected tables [queues.NAME], not int 5"),
        ("[queues]\nsync = 5\n", "queues.sync: expected a table, not int 5"),
        ("[queues.sync]\nlimit = 5\n", "queues.sync: unknown key 'limit'"),
        ("[queues.sync]\nconcurrency = 1.5\n", "concurrency: expected a whole number"),
        ("[queues.sync]\nconcurrency = -1\n", "queues.sync: Expected `int` >= 0"),
        ("[queues.sync]\nrate = 5\n", "a rate limit needs both rate and rate_interval_ms"),
        ('[queues."a b"]\nrate = 5\n', "queues.a b: Expected `str` matching regex"),
    ],
)
def test_a_bad_file_is_refused_naming_the_file_and_the_key(
    text: str, message: str, tmp_path: Path
) -> None:
    path = tmp_path / "leash.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as refused:
        read_file(str(path))
    assert str(refused.value).startswith(f"{path}: ")
    assert message in str(refused.value)


def test_the_files_queue_tables_give_queues_their_limits(tmp_path: Path) -> None:
    path = tmp_path / "leash.toml"
    path.write_text(
        "port = 7500\n[queues.sync]\nconcurrency = 20\nper-key = 1\n"
        "rate = 600\nrate-interval-ms = 60000\n[queues.mail]\nconcurrency = 3\n"
    )
    config = cli.config_of(["--config", str(path)])
    assert config.port == 7500
    assert config.queue_limits == (
        QueueLimitsSet("sync", 20, 1, 600, 60_000),
        QueueLimitsSet("mail", concurrency=3),
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LEASH_PORT": "seven"}, "LEASH_PORT='seven': expected a whole number"),
        ({"LEASH_MAX_CONNECTIONS": "0"}, "must be between 1 and 1000000, not 0"),
        ({"LEASH_REPAIR_TRUNCATE": "maybe"}, "expected true or false"),
        ({"LEASH_ADMIN_UID": "1,x"}, "LEASH_ADMIN_UID='1,x': expected a whole number, not 'x'"),
    ],
)
def test_a_bad_variable_is_refused_naming_it(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        resolve({}, env, None)
    assert message in str(refused.value)


def test_empty_and_unknown_variables_are_left_alone() -> None:
    resolved = resolve({}, {"LEASH_PORT": "", "LEASH_URL": "leash://x", "LEASH_NOPE": "1"}, None)
    assert resolved.values["port"] == ServerConfig().port
    assert set(resolved.origins.values()) == {"default"}


@pytest.mark.parametrize("word", ["1", "true", "Yes", "on"])
def test_a_switch_is_on_by_any_usual_word(word: str) -> None:
    assert cli.config_of([], {"LEASH_INSECURE_NO_AUTH": word}).insecure_no_auth


def test_serve_exits_78_naming_an_unknown_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "leash.toml"
    path.write_text("prot = 7420\n")
    assert cli.main(["serve", "--config", str(path)]) == 78
    assert "unknown setting 'prot' (did you mean 'port'?)" in caplog.text


def test_a_missing_config_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the config file"):
        resolve({}, {}, str(tmp_path / "none.toml"))


def test_the_example_config_in_the_docs_is_valid() -> None:
    found = read_file(str(ROOT / "docs" / "leash.toml"))
    assert {setting.name for setting in found} >= {"data-dir", "host", "key-file", "log-format"}
