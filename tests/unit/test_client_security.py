"""The client's key and URL options, and ``leash keygen`` (docs/security.md)."""

import os
from pathlib import Path

import pytest

from leash.client import Key, KeyFileError, load_key
from leash.client._url import parse_url
from leash.client.cli import main as leash
from leash.protocol import auth as A


def write_keys(path: Path, *keys: A.Key, mode: int = 0o600) -> str:
    path.write_text("\n".join(A.key_file_text(key) for key in keys))
    path.chmod(mode)
    return str(path)


FIRST, SECOND = A.Key("k-1", b"1" * 32), A.Key("k-2", b"2" * 32)


def test_a_leash_url_can_name_a_key_file_and_a_key(tmp_path: Path) -> None:
    path = write_keys(tmp_path / "keys.toml", FIRST, SECOND)
    assert parse_url(f"leash://h:1?key_file={path}").key == SECOND  # the last live one
    assert parse_url(f"leash://h:1?key_file={path}&key_id=k-1").key == FIRST
    assert parse_url("leash://h:1").key is None and parse_url("leash://h:1").tls is None


def test_a_leashs_url_means_tls_with_the_systems_cas_by_default() -> None:
    endpoint = parse_url("leashs://broker.example:7421")
    assert (endpoint.host, endpoint.port) == ("broker.example", 7421)
    assert endpoint.tls is not None and endpoint.tls.check_hostname


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("leash://h?ca=/x.pem", "unknown option 'ca'"),
        ("leashs://h?color=red", "unknown option 'color'"),
        ("leash://h?key_id=k", "key_id needs key_file"),
        ("leash://h?key_file=/a&key_file=/b", "given twice"),
        ("leash://user:secret@h", "expected leash://host:port"),
    ],
)
def test_a_bad_url_option_says_what_is_wrong(url: str, says: str) -> None:
    with pytest.raises(ValueError) as refused:
        parse_url(url)
    assert says in str(refused.value)


def test_a_client_refuses_a_key_file_open_to_others(tmp_path: Path) -> None:
    path = write_keys(tmp_path / "keys.toml", FIRST, mode=0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_key(path)
    with pytest.raises(KeyFileError, match="cannot read"):
        load_key(tmp_path / "missing.toml")


def test_keygen_prints_a_new_random_key_in_the_key_file_format(
    capsys: pytest.CaptureFixture[str],
) -> None:
    secrets = set()
    for _ in range(2):
        assert leash(["keygen"]) == 0
        [key] = A.parse_key_file(capsys.readouterr().out.encode(), "stdout")
        assert key.id.startswith("key-") and len(key.secret) == 32 and key.not_after is None
        secrets.add(key.secret)
    assert len(secrets) == 2
    assert leash(["keygen", "--id", "k-2027", "--not-after", "2027-01-01T00:00:00Z"]) == 0
    [key] = A.parse_key_file(capsys.readouterr().out.encode(), "stdout")
    assert key.id == "k-2027" and key.not_after is not None and key.not_after.year == 2027


def test_keygen_out_makes_a_0600_file_and_appends_to_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "keys.toml"
    old_umask = os.umask(0o022)
    try:
        assert leash(["keygen", "--id", "a", "--out", str(path)]) == 0
        assert leash(["keygen", "--id", "b", "--out", str(path)]) == 0
    finally:
        os.umask(old_umask)
    assert path.stat().st_mode & 0o777 == 0o600
    assert [key.id for key in A.parse_key_file(path.read_bytes(), "f")] == ["a", "b"]
    assert load_key(path).id == "b" and load_key(path, "a").id == "a"
    assert capsys.readouterr().out == ""  # the secret went to the file only


def test_keygen_refuses_to_add_to_a_file_others_can_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "keys.toml"
    path.write_text("")
    path.chmod(0o644)
    assert leash(["keygen", "--out", str(path)]) == 1
    assert "chmod 600" in capsys.readouterr().err
    assert path.read_text() == ""
    assert leash(["keygen", "--not-after", "2027-01-01T00:00:00"]) == 1  # no time zone


def test_a_key_object_can_be_given_directly() -> None:
    key = Key("k", os.urandom(32))
    from leash.client._security import as_key

    assert as_key(key) is key and as_key(None) is None
