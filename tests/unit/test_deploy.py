"""The Dockerfile and the systemd unit, read as their tools read them.

No container runtime and no systemd run here, so these tests parse the files
and check what docs/configuration.md promises of them: a non-root user, the data
volume, the ports, metrics bound inside the container, a health check
through ``leash ping``, a clean SIGTERM stop; restart on failure but not on
exit 78, hardening, the data directory writable, enough open files. The
settings they give go through the broker's own resolution.
"""

import configparser
import json
import logging
import shlex
from pathlib import Path

from leash.broker import logs
from leash.broker.cli import resolve_argv
from leash.broker.server.limits import FD_HEADROOM
from leash.broker.server.main import EXIT_CONFIG
from leash.broker.settings import SETTINGS
from leash.broker.sources import read_file, server_config
from leash.client import _env
from leash.client._admin_cli import ENV_DATA_DIR, socket_path

ROOT = Path(__file__).resolve().parents[2]
CLIENT_VARIABLES = {_env.URL, _env.KEY_FILE, _env.KEY_ID, _env.TLS_CA, _env.TLS_CERT, _env.TLS_KEY}


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    assert not pending, "a continuation line ends the Dockerfile"
    instructions = []
    for line in lines:
        word, _, rest = line.partition(" ")
        instructions.append((word.upper(), rest.strip()))
    return instructions


def one(instruction: str) -> str:
    found = [rest for word, rest in dockerfile() if word == instruction]
    assert len(found) == 1, f"{instruction}: {found}"
    return found[0]


def docker_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in dockerfile():
        if word == "ENV":
            for pair in shlex.split(rest):
                name, equals, value = pair.partition("=")
                assert equals, f"ENV {pair}: use NAME=VALUE"
                env[name] = value
    return env


def test_the_dockerfile_runs_the_broker_as_pid_1_in_exec_form_as_a_non_root_user() -> None:
    entrypoint = json.loads(one("ENTRYPOINT"))
    assert entrypoint == ["python", "-m", "leash.broker", "serve"]
    assert json.loads(one("CMD")) == []
    user = one("USER")
    assert user not in ("root", "0") and not user.startswith("0:")
    assert "useradd --system --uid 10001" in one("RUN") and one("RUN").count(f" {user} ") >= 1
    assert one("STOPSIGNAL") == "SIGTERM"


def test_the_image_settings_bind_everything_inside_and_keep_the_data_in_the_volume() -> None:
    env = docker_env()
    unknown = {
        name
        for name in env
        if name.startswith("LEASH_") and name not in {s.env for s in SETTINGS} | CLIENT_VARIABLES
    }
    assert unknown == set()
    resolved = resolve_argv(json.loads(one("CMD")), env)
    config = server_config(resolved.values)
    assert (config.host, config.metrics_host) == ("0.0.0.0", "0.0.0.0")
    assert config.data_dir == "/data" and json.loads(one("VOLUME")) == ["/data"]
    assert config.key_file == "/keys/keys.toml"  # protected mode: 0.0.0.0 needs keys
    exposed = {int(port.partition("/")[0]) for port in one("EXPOSE").split()}
    assert exposed == {config.port, config.metrics_port}
    assert socket_path(None, None, env) == "/data/admin.sock"  # where `leash ping` looks
    assert ENV_DATA_DIR in env


def test_the_health_check_is_leash_ping_within_a_second() -> None:
    words = one("HEALTHCHECK").split()
    options = dict(word.removeprefix("--").split("=") for word in words if word.startswith("--"))
    assert words[len(options)] == "CMD"
    command = json.loads(" ".join(words[len(options) + 1 :]))
    assert command[:2] == ["leash", "ping"]
    ping_timeout_s = float(command[command.index("--timeout-s") + 1])
    assert ping_timeout_s <= 1.0
    assert float(options["timeout"].removesuffix("s")) > ping_timeout_s


def test_the_dockerfile_copies_what_the_package_is_built_from() -> None:
    copied = {rest.split()[0] for word, rest in dockerfile() if word == "COPY"}
    for word, rest in dockerfile():
        if word == "COPY":
            for source in rest.split()[:-1]:
                assert (ROOT / source).exists(), source
    assert {"protocol", "broker", "client", "web", "leash"} <= copied


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(ROOT / "docs" / "leash.service")
    return parser


def test_the_service_restarts_on_failure_but_not_on_a_configuration_error() -> None:
    service = unit()["Service"]
    assert service["Type"] in ("simple", "notify")
    assert service["Restart"] == "on-failure"
    assert service["RestartPreventExitStatus"] == str(EXIT_CONFIG)
    assert service["ExecReload"].endswith("kill -HUP $MAINPID")


def test_the_service_is_hardened_and_writes_only_its_data_directory() -> None:
    service = unit()["Service"]
    for option, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "CapabilityBoundingSet": "",
    }.items():
        assert service[option] == value, option
    assert service["User"] != "root"
    command = shlex.split(service["ExecStart"])
    assert command[1:3] == ["serve", "--config"]
    config_file = command[3]
    assert config_file == "/etc/leash/leash.toml"  # the example in docs/leash.toml
    example = {
        setting.name: value
        for setting, value in read_file(str(ROOT / "docs" / "leash.toml")).items()
    }
    assert example["data-dir"] in service["ReadWritePaths"].split()
    assert f"/var/lib/{service['StateDirectory']}" == example["data-dir"]
    assert service["StandardError"] == "journal"


def test_the_service_may_open_a_file_per_connection_and_more() -> None:
    service = unit()["Service"]
    example = {
        setting.name: value
        for setting, value in read_file(str(ROOT / "docs" / "leash.toml")).items()
    }
    assert int(service["LimitNOFILE"]) >= example["max-connections"] + FD_HEADROOM


def test_json_log_lines_are_one_object_each_with_the_error() -> None:
    formatter = logs.JsonFormatter()
    record = logging.LogRecord("leash", logging.ERROR, "f.py", 1, "cannot %s", ("start",), None)
    record.created = 1_796_000_000.25
    line = json.loads(formatter.format(record))
    assert line == {
        "time": "2026-11-30T00:53:20.250Z",
        "level": "error",
        "logger": "leash",
        "message": "cannot start",
    }
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    assert "ValueError: boom" in json.loads(formatter.format(record))["error"]
