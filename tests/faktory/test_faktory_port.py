"""The Faktory port of a real broker, line by line (docs/faktory.md): the
handshake and passwords, what is refused and how, INFO, BEAT and the
operator's quiet and stop, MUTATE's permission, and that a Faktory job is a
journalled job like any other."""

import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from leash.client import Client, tls_context
from leash.client.admin import AdminClient
from leash.protocol import faktory as F
from leash.protocol.auth import Key
from tests.faktory.conftest import Launch
from tests.faktory.lines import Lines, Reply
from tests.integration.broker_proc import BrokerProcess
from tests.integration.net_helpers import key_file, new_key
from tests.integration.tls_certs import TlsFiles

pytestmark = pytest.mark.timeout(90)
OK = Reply("+", "OK", None)
FAST_FAIL = ("--auth-fail-delay-ms", "100")


def unit(jid: str, **fields: object) -> dict[str, object]:
    return {"jid": jid, "jobtype": "t", "args": [], **fields}


def later(seconds: float = 3600) -> str:
    """An RFC 3339 time that far from now."""
    return datetime.fromtimestamp(time.time() + seconds, UTC).isoformat()


def test_a_producer_pushes_and_a_consumer_fetches_acks_and_ends(broker: BrokerProcess) -> None:
    with Lines(broker.faktory_port) as producer, Lines(broker.faktory_port) as consumer:
        producer.hello()
        producer.ok("PUSH", unit("job-00001", args=[1, "two"], custom={"k": "v"}))
        consumer.hello(wid="wid-00001")
        job = consumer.command("FETCH", "default").json
        assert (job["jid"], job["args"], job["custom"]) == ("job-00001", [1, "two"], {"k": "v"})
        consumer.ok("ACK", {"jid": "job-00001"})
        assert consumer.command("END") == OK
        assert consumer.closed()
        assert producer.command("FETCH").kind == "-", "a producer holds no jobs"


def test_the_first_command_must_be_hello(broker: BrokerProcess) -> None:
    with Lines(broker.faktory_port) as lines:
        assert lines.reply().text == 'HI {"v":2}'
        lines.send('PUSH {"jid":"job-00001","jobtype":"t","args":[]}')
        assert "the first command must be HELLO" in lines.error()
        assert lines.closed()
    with Lines(broker.faktory_port) as lines:
        lines.reply()
        lines.send('HELLO {"v":9}')
        assert "version 9" in lines.error()
        assert lines.closed()


def test_every_refusal_is_a_clear_error_and_the_connection_goes_on(broker: BrokerProcess) -> None:
    with Lines(broker.faktory_port) as lines:
        lines.hello(wid="wid-00001")
        for line, says in [
            ("BATCH NEW {}", "Faktory Enterprise"),
            ("TRACK GET x", "not served"),
            ("QUEUE PAUSE default", "leash pause"),
            ("WHAT", "unknown command WHAT"),
            ("PUSH {not json", "work unit is a JSON object"),
            ('PUSH {"jid":"x","jobtype":"t","args":[]}', "jid must have 8 to 128"),
            ('PUSH {"jid":"job-00001","jobtype":"t","args":[],"priority":0}', "priority"),
            ('ACK {"jid":"never-pushed"}', "no job 'never-pushed'"),
            ('FAIL {"jid":"never-pushed"}', "no job"),
            ('BEAT {"wid":"another"}', "wid"),
            ('HELLO {"v":2}', "HELLO comes once"),
        ]:
            lines.send(line)
            assert says in lines.error(), line
        assert lines.command("FETCH", "default") == Reply("$", "", None)  # still here


def test_info_has_the_shape_faktory_clients_read(broker: BrokerProcess) -> None:
    with Lines(broker.faktory_port) as lines:
        lines.hello(wid="wid-00001")
        lines.ok("PUSH", unit("job-00001", queue="mail"))
        lines.ok("PUSH", unit("job-00002", queue="mail"))
        lines.ok("PUSH", unit("job-00003", at=later()))
        lines.command("FETCH", "mail")
        info = lines.command("INFO").json
    assert info["faktory"]["queues"] == {"mail": 1, "default": 0}
    assert info["faktory"]["total_enqueued"] == 1 and info["faktory"]["total_queues"] == 2
    tasks = info["faktory"]["tasks"]
    assert (tasks["Busy"]["size"], tasks["Scheduled"]["size"], tasks["Workers"]["size"]) == (
        1,
        1,
        1,
    )
    assert info["server"]["description"] == "Leash" and info["server"]["uptime"] >= 0
    assert info["server"]["connections"] >= 1 and info["server"]["command_count"] >= 6
    assert info["now"].endswith("Z") and info["server_utc_time"].endswith(" UTC")


def test_beat_carries_the_operators_quiet_and_stop(
    broker: BrokerProcess, admin: AdminClient
) -> None:
    with Lines(broker.faktory_port) as lines:
        lines.hello(wid="wid-00001", hostname="box", pid=42, labels=["blue"])
        assert lines.command("BEAT", {"wid": "wid-00001", "rss_kb": 1000}) == OK
        (process,) = admin.processes()
        assert (process.worker_id, process.hostname, process.pid) == ("wid-00001", "box", 42)
        assert (process.labels, process.client) == (["blue"], F.CLIENT_NAME)
        admin.control("wid-00001", "quiet")
        assert lines.command("BEAT", {"wid": "wid-00001"}).json == {"state": "quiet"}
        lines.ok("PUSH", unit("job-00001"))
        started_s = time.monotonic()
        assert lines.command("FETCH", "default").data is None, "a quiet process gets nothing"
        assert time.monotonic() - started_s >= 1.9, "after the wait FETCH describes"
        admin.control("wid-00001", "terminate")
        assert lines.command("BEAT", {"wid": "wid-00001"}).json == {"state": "terminate"}


def test_a_consumer_that_says_it_is_quiet_is_quiet(
    broker: BrokerProcess, admin: AdminClient
) -> None:
    with Lines(broker.faktory_port) as lines:
        lines.hello(wid="wid-00001")
        reply = lines.command("BEAT", {"wid": "wid-00001", "current_state": "quiet"})
        assert reply.json == {"state": "quiet"}
        assert [p.state for p in admin.processes()] == ["quiet"]


def test_a_faktory_job_is_journalled_and_survives_a_crash(launch: Launch) -> None:
    broker = launch()
    with Lines(broker.faktory_port) as lines:
        lines.hello()
        lines.ok("PUSH", unit("job-00001", custom={"trace": [1, 2]}, retry=0, reserve_for=90))
    broker.kill()
    broker.start()
    with Lines(broker.faktory_port) as lines:
        lines.hello(wid="wid-00001")
        job = lines.command("FETCH", "default").json
    assert (job["custom"], job["retry"], job["reserve_for"]) == ({"trace": [1, 2]}, 0, 90)


def test_mutate_and_flush_are_refused_without_the_flag_or_an_admin_key(launch: Launch) -> None:
    broker = launch()
    with Lines(broker.faktory_port) as lines:
        lines.hello()
        lines.ok("PUSH", unit("job-00001", at=later()))
        for line in ('MUTATE {"cmd":"clear","target":"scheduled"}', "FLUSH"):
            lines.send(line)
            error = lines.error()
            assert error.startswith("PERMISSION_DENIED") and "role admin" in error
    with broker.admin() as admin:
        assert admin.job("job-00001").state == "scheduled"


def test_mutate_is_journalled_like_an_operators_operation(broker: BrokerProcess) -> None:
    with Lines(broker.faktory_port) as lines:
        lines.hello()
        for n in range(3):
            lines.ok("PUSH", unit(f"job-0000{n}", at=later(), jobtype=f"t{n % 2}"))
        lines.ok("MUTATE", {"cmd": "discard", "target": "scheduled", "filter": {"jobtype": "t0"}})
    broker.kill()
    broker.start()
    with broker.admin() as admin:
        assert [job.id for job in admin.jobs("scheduled")] == ["job-00001"]


# --- passwords ----------------------------------------------------------------------


def password_file(tmp_path: Path, password: str) -> str:
    path = tmp_path / "faktory-password"
    path.write_text(password + "\n")
    path.chmod(0o600)
    return str(path)


def test_a_password_is_asked_for_and_checked(launch: Launch, tmp_path: Path) -> None:
    password = password_file(tmp_path, "s3cret")
    broker = launch("--faktory-password-file", password, "--auth-fail-delay-ms", "30000")
    with Lines(broker.faktory_port) as lines:
        lines.hello(password="s3cret")
        lines.ok("PUSH", unit("job-00001"))
    with Lines(broker.faktory_port) as lines:
        asked = lines.reply()
        assert '"i":' in asked.text and '"s":' in asked.text
        lines.send('HELLO {"v":2,"pwdhash":"00"}')
        assert lines.error() == "ERR Invalid password"  # at once: a guesser holds no place
        assert lines.closed()
    with Lines(broker.faktory_port) as lines:  # within the delay: refused before any check
        lines.reply()
        lines.send('HELLO {"v":2}')
        assert lines.error().startswith("ERR too many failed authentications from here")
        assert lines.closed()


def test_a_client_without_a_version_hashes_its_password_once(
    launch: Launch, tmp_path: Path
) -> None:
    broker = launch("--faktory-password-file", password_file(tmp_path, "s3cret"))
    with Lines(broker.faktory_port) as lines:
        greeting = lines.reply()
        salt = greeting.text.split('"s":"')[1].split('"')[0]
        lines.ok("HELLO", {"pwdhash": F.password_hash("s3cret", salt, 1)})


def test_keys_are_passwords_and_only_an_admin_key_may_mutate(
    launch: Launch, tmp_path: Path
) -> None:
    plain, boss = new_key("plain"), Key("boss", os.urandom(32), role="admin")
    broker = launch("--key-file", key_file(tmp_path / "keys.toml", plain, boss), *FAST_FAIL)
    with Lines(broker.faktory_port) as lines:
        lines.hello(password=plain.secret.hex())
        lines.ok("PUSH", unit("job-00001", at=later()))
        lines.send("FLUSH")
        assert lines.error().startswith("PERMISSION_DENIED")
    with Lines(broker.faktory_port) as lines:
        lines.hello(password=boss.secret.hex())
        lines.ok("FLUSH")
    with Client("127.0.0.1", broker.port, key=plain) as client:  # the Leash port: keys as ever
        assert client.push("t")


def test_sighup_reloads_the_password_file(launch: Launch, tmp_path: Path) -> None:
    path = password_file(tmp_path, "first")
    broker = launch("--faktory-password-file", path, *FAST_FAIL)
    password_file(tmp_path, "second")
    os.kill(broker.pid, 1)  # SIGHUP
    assert broker.wait_for_log(f"password file {path} reloaded")
    with Lines(broker.faktory_port) as lines:
        lines.hello(password="second")
    Path(path).write_text("")
    os.kill(broker.pid, 1)
    assert broker.wait_for_log("password file not reloaded, the old password stays in force")
    with Lines(broker.faktory_port) as lines:
        lines.hello(password="second")


def test_the_faktory_port_speaks_tls_when_the_broker_does(
    launch: Launch, tls_files: TlsFiles
) -> None:
    broker = launch("--tls-cert", tls_files.server_cert, "--tls-key", tls_files.server_key)
    assert broker.wait_for_log("faktory protocol on") and broker.wait_for_log("(TLS,")
    with Lines(broker.faktory_port, tls=tls_context(tls_files.ca)) as lines:
        lines.hello(wid="tls-wid-01")
        lines.ok("PUSH", unit("tls-job-001"))
        assert lines.command("FETCH", "default").json["jid"] == "tls-job-001"
    with Lines(broker.faktory_port) as plain:  # no TLS: no HI, and closed
        assert plain.closed()
        assert plain.buffer == b""


def test_the_faktory_port_does_not_loosen_protected_mode(tmp_path: Path) -> None:
    password = password_file(tmp_path, "s3cret")
    command = [sys.executable, "-m", "leash.broker", "serve", "--port", "0", "--host", "0.0.0.0"]
    command += ["--data-dir", str(tmp_path / "data"), "--faktory-port", "0"]
    command += ["--faktory-password-file", password]
    done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert done.returncode == 78 and "protected mode" in done.stderr, done.stderr
    assert "listening" not in done.stderr and "faktory protocol on" not in done.stderr


def test_a_password_file_readable_by_others_refuses_to_start(tmp_path: Path) -> None:
    path = password_file(tmp_path, "s3cret")
    os.chmod(path, 0o644)
    command = [sys.executable, "-m", "leash.broker", "serve", "--port", "0"]
    command += ["--data-dir", str(tmp_path / "data"), "--faktory-port", "0"]
    command += ["--faktory-password-file", path]
    done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert done.returncode == 78 and f"chmod 600 {path}" in done.stderr, done.stderr
