"""Clients find the broker from their options, else the LEASH_* variables, else the default."""

import os
from pathlib import Path

import pytest

from leash.client._admin_cli import socket_path
from leash.client._env import Options, endpoint
from leash.protocol.auth import Key, key_file_text


def key_file(tmp_path: Path, *ids: str) -> str:
    path = tmp_path / "keys.toml"
    path.write_text("".join(key_file_text(Key(key_id, bytes(32))) for key_id in ids))
    os.chmod(path, 0o600)
    return str(path)


def test_nothing_given_and_nothing_set_is_the_local_default() -> None:
    found = endpoint(Options(), {})
    assert (found.host, found.port, found.key, found.tls) == ("127.0.0.1", 7420, None, None)


def test_leash_url_names_the_broker_unless_an_address_is_given() -> None:
    env = {"LEASH_URL": "leash://broker.internal:7500"}
    assert endpoint(Options(), env)[:2] == ("broker.internal", 7500)
    assert endpoint(Options(host="other"), env)[:2] == ("other", 7420)
    assert endpoint(Options(port=7600), env)[:2] == ("127.0.0.1", 7600)
    assert endpoint(Options(url="leash://third:1"), env)[:2] == ("third", 1)
    assert endpoint(Options(), {"LEASH_URL": ""})[:2] == ("127.0.0.1", 7420)


def test_url_and_host_do_not_go_together() -> None:
    with pytest.raises(ValueError, match="--url or --host/--port"):
        endpoint(Options(url="leash://a:1", host="b"), {})


def test_the_key_comes_from_the_flag_else_the_variable(tmp_path: Path) -> None:
    path = key_file(tmp_path, "old", "new")
    assert endpoint(Options(), {"LEASH_KEY_FILE": path}).key == Key("new", bytes(32))
    env = {"LEASH_KEY_FILE": path, "LEASH_KEY_ID": "old"}
    assert endpoint(Options(), env).key == Key("old", bytes(32))
    assert endpoint(Options(key_file=path, key_id="new"), env).key == Key("new", bytes(32))
    with pytest.raises(ValueError, match="--key-id needs --key-file"):
        endpoint(Options(key_id="new"), {})


def test_tls_files_come_from_the_variables_too() -> None:
    with pytest.raises(ValueError, match="needs its certificate"):
        endpoint(Options(), {"LEASH_TLS_CLIENT_KEY": "client.key"})
    assert endpoint(Options(tls=True), {}).tls is not None


def test_operator_commands_find_the_socket_by_flag_then_the_brokers_variables() -> None:
    env = {"LEASH_ADMIN_SOCKET": "/run/a.sock", "LEASH_DATA_DIR": "/srv/leash"}
    assert socket_path("/x.sock", None, env) == "/x.sock"
    assert socket_path(None, "/d", env) == "/d/admin.sock"
    assert socket_path(None, None, env) == "/run/a.sock"
    assert socket_path(None, None, {"LEASH_DATA_DIR": "/srv/leash"}) == "/srv/leash/admin.sock"
    assert socket_path(None, None, {}) == "./leash-data/admin.sock"
