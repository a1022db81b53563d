"""Who may use the dashboard: loopback only without credentials, sign-in
with a password hashed at rest (a wrong one answered after a delay) or a
broker key, API keys without a session, and protected mode at start-up."""

import argparse
import os
import re
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from leash.protocol.auth import Key, key_file_text
from leash.web.credentials import Credentials, CredentialsError, PasswordHash, hash_password
from leash.web.serve import StartupError, check
from tests.web.conftest import HTTP_TIMEOUT_S, Dashboard

PASSWORD = "correct horse battery staple"
SECRET = bytes(range(32))


def write_private(path: str, text: str) -> str:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)
    return path


@pytest.fixture
def signed(start_dashboard: Callable[..., Dashboard], tmp_path: "os.PathLike[str]") -> Dashboard:
    password_file = write_private(os.path.join(tmp_path, "web.pw"), hash_password(PASSWORD))
    key_file = write_private(
        os.path.join(tmp_path, "keys.toml"), key_file_text(Key("ops-1", SECRET))
    )
    return start_dashboard(["--password-file", password_file, "--key-file", key_file])


def login_form(http: httpx.Client) -> str:
    page = http.get("/login")
    assert page.status_code == 200
    match = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert match is not None
    return match.group(1)


def test_nothing_is_shown_or_changed_before_signing_in(signed: Dashboard) -> None:
    with httpx.Client(base_url=signed.url, timeout=HTTP_TIMEOUT_S) as http:
        page = http.get("/jobs/dead")
        assert page.status_code == 303 and page.headers["location"] == "/login?next=/jobs/dead"
        refused = http.get("/api/stats")
        assert refused.status_code == 401
        assert "set-cookie" not in refused.headers, "a refused request keeps no session"
        assert http.get("/api/session").status_code == 401
        assert http.post("/api/queues/q/pause").status_code == 401
        assert http.get("/static/app.js").status_code == 200, "the sign-in page needs them"


def test_a_wrong_password_is_refused_after_a_delay_and_the_right_one_signs_in(
    signed: Dashboard,
) -> None:
    with httpx.Client(base_url=signed.url, timeout=HTTP_TIMEOUT_S) as http:
        token = login_form(http)
        started = time.monotonic()
        wrong = http.post("/login", data={"csrf": token, "password": "guess", "next": "/queues"})
        assert time.monotonic() - started >= 0.95, "answered after the 1 s delay"
        assert wrong.status_code == 401 and "Wrong password" in wrong.text
        no_token = http.post("/login", data={"password": PASSWORD})
        assert no_token.status_code == 403
        right = http.post("/login", data={"csrf": token, "password": PASSWORD, "next": "/queues"})
        assert right.status_code == 303 and right.headers["location"] == "/queues"
        assert http.get("/queues").status_code == 200
        stats = http.get("/api/stats")
        assert stats.status_code == 200 and stats.json()["version"].startswith("leash/")
        fresh = http.get("/api/session").json()["csrf"]
        assert fresh != token, "signing in makes a new session"
        assert http.post("/api/queues/q/pause").status_code == 403, "a POST still needs CSRF"
        paused = http.post("/api/queues/q/pause", headers={"X-CSRF-Token": fresh})
        assert paused.status_code == 200
        http.post("/logout", data={"csrf": fresh})
        assert http.get("/api/stats").status_code == 401


def test_a_broker_key_signs_in_on_the_page_or_calls_the_api_without_a_session(
    signed: Dashboard,
) -> None:
    key = f"ops-1:{SECRET.hex()}"
    with httpx.Client(base_url=signed.url, timeout=HTTP_TIMEOUT_S) as http:
        token = login_form(http)
        assert http.post("/login", data={"csrf": token, "password": key}).status_code == 303
    api = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=signed.url, timeout=HTTP_TIMEOUT_S, headers=api) as http:
        stats = http.get("/api/stats")
        assert stats.status_code == 200 and "set-cookie" not in stats.headers
        assert http.post("/api/queues/q/pause").status_code == 200, "no CSRF with a key"
    with signed.admin() as admin:
        assert [(q.name, q.paused) for q in admin.queues()] == [("q", True)]
    wrong = {"Authorization": f"Bearer ops-1:{bytes(32).hex()}"}
    with httpx.Client(base_url=signed.url, timeout=HTTP_TIMEOUT_S, headers=wrong) as http:
        started = time.monotonic()
        assert http.get("/api/stats").status_code == 401
        assert time.monotonic() - started >= 0.95


def run_web(*args: str) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        "-m",
        "leash.web",
        "--port",
        "0",
        "--socket",
        "/nonexistent/s",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)


def test_beyond_loopback_it_refuses_to_start_without_credentials_and_tls(
    tmp_path: "os.PathLike[str]",
) -> None:
    bare = run_web("--host", "0.0.0.0")
    assert bare.returncode == 78
    assert "protected mode" in bare.stderr and "credentials" in bare.stderr
    password_file = write_private(os.path.join(tmp_path, "pw"), hash_password(PASSWORD))
    no_tls = run_web("--host", "0.0.0.0", "--password-file", password_file)
    assert no_tls.returncode == 78 and "TLS" in no_tls.stderr and "credentials" not in no_tls.stderr
    half_tls = run_web("--tls-cert", "cert.pem")
    assert half_tls.returncode == 78 and "--tls-key" in half_tls.stderr


def test_with_credentials_and_tls_protected_mode_lets_it_bind_anywhere() -> None:
    credentials = Credentials(PasswordHash(hash_password(PASSWORD), "pw"), [])
    options = argparse.Namespace(host="0.0.0.0", tls_cert="c.pem", tls_key="k.pem")
    check(options, credentials)  # no StartupError
    with pytest.raises(StartupError, match="TLS"):
        check(argparse.Namespace(host="::", tls_cert=None, tls_key=None), credentials)


def test_a_password_file_others_can_read_or_that_is_not_a_hash_is_refused(
    tmp_path: "os.PathLike[str]",
) -> None:
    loose = os.path.join(tmp_path, "loose")
    with open(loose, "w") as file:
        file.write(hash_password(PASSWORD))
    os.chmod(loose, 0o644)
    refused = run_web("--password-file", loose)
    assert refused.returncode == 78 and "chmod 600" in refused.stderr
    plain = write_private(os.path.join(tmp_path, "plain"), PASSWORD)
    refused = run_web("--password-file", plain)
    assert refused.returncode == 78 and "leash web-password" in refused.stderr
    with pytest.raises(CredentialsError):
        hash_password("short")


def test_leash_web_password_writes_a_hash_that_checks_the_password(
    tmp_path: "os.PathLike[str]",
) -> None:
    out = os.path.join(tmp_path, "web.pw")
    made = subprocess.run(
        [sys.executable, "-m", "leash.client", "web-password", "--stdin", "--out", out],
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    assert os.stat(out).st_mode & 0o777 == 0o600
    with open(out) as file:
        line = file.read()
    assert PASSWORD not in line and line.startswith("scrypt$")
    credentials = Credentials.load(out, None)
    assert credentials.check(PASSWORD) and not credentials.check(PASSWORD + "!")


def test_over_tls_the_dashboard_serves_https_and_its_cookie_is_secure(
    start_dashboard: Callable[..., Dashboard], tmp_path: "os.PathLike[str]"
) -> None:
    from tests.integration.tls_certs import make_tls_files

    (Path(tmp_path) / "tls").mkdir()
    tls = make_tls_files(Path(tmp_path) / "tls")
    password_file = write_private(os.path.join(tmp_path, "web.pw"), hash_password(PASSWORD))
    dashboard = start_dashboard(
        [
            "--password-file",
            password_file,
            "--tls-cert",
            tls.server_cert,
            "--tls-key",
            tls.server_key,
        ]
    )
    url = f"https://127.0.0.1:{dashboard.web.port}"
    trusted = ssl.create_default_context(cafile=tls.ca)
    with httpx.Client(base_url=url, timeout=HTTP_TIMEOUT_S, verify=trusted) as http:
        page = http.get("/login")
        assert page.status_code == 200 and "Sign in" in page.text
        assert "secure" in page.headers["set-cookie"].lower()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"https://127.0.0.1:{dashboard.web.port}/login", timeout=HTTP_TIMEOUT_S)


def test_a_bad_port_in_the_environment_exits_78_naming_it() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "leash.web", "--socket", "/nonexistent/s"],
        env={**os.environ, "LEASH_WEB_PORT": "seventy"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 78 and "seventy" in done.stderr
