"""``--admin-uid`` with a real second user (docs/protocol.md §13.1): a user
created for the test (root only; skipped with the reason otherwise) reaches
the broker's admin socket in a directory it may enter and is served, while
a user not named is refused; and a broker told to admit a uid that could
not reach the socket refuses to start and says what to do.

The other users run the system's Python with the standard library only
(the test's interpreter and packages may not be theirs to read): a raw
``stats`` request, framed and encoded by hand, and the reply's bytes back.
"""

import contextlib
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator

import pytest

from leash.protocol import admin as A
from leash.protocol import messages as M
from leash.protocol.errors import ErrorCode
from leash.protocol.frames import FrameDecoder
from tests.integration.broker_proc import BrokerProcess

NOBODY = 65534
TIMEOUT_S = 30
# {"op": "stats", "rid": 7}, framed: what the other user sends.
STATS_FRAME = bytes.fromhex("0000000f") + b"\x82\xa2op\xa5stats\xa3rid\x07"
CLIENT = f"""
import socket, sys
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.settimeout({TIMEOUT_S})
try:
    sock.connect(sys.argv[1])
except OSError as error:
    print("connect failed:", error.strerror)
    sys.exit(3)
try:
    sock.sendall({STATS_FRAME!r})
except OSError:
    pass  # refused at once: the broker's error is still there to read
data = b""
while chunk := sock.recv(65536):
    data += chunk
    if len(data) >= 4 and len(data) >= 4 + int.from_bytes(data[:4], "big"):
        break
print(data.hex())
"""


def _system_python() -> str | None:
    return shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "creating a second user needs root"
    if shutil.which("useradd") is None or shutil.which("userdel") is None:
        return "useradd/userdel are not installed"
    if _system_python() is None:
        return "no system python3 for the other users to run"
    return None


pytestmark = pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")


@pytest.fixture
def second_user() -> Iterator[int]:
    """A user created for this test (and removed after it): its uid."""
    name = f"leash-t{secrets.token_hex(4)}"
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        check=True,
        timeout=TIMEOUT_S,
    )
    try:
        yield pwd.getpwnam(name).pw_uid
    finally:
        subprocess.run(["userdel", name], check=False, timeout=TIMEOUT_S)


@pytest.fixture
def socket_dir() -> Iterator[str]:
    """A directory others may enter but not list (owned by root, 0711)."""
    directory = tempfile.mkdtemp(prefix="leash-admin-", dir="/tmp")
    os.chmod(directory, 0o711)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _stats_as(uid: int, path: str) -> M.Error | A.AdminReply:
    """Ask for stats as ``uid``: the one reply."""
    python = _system_python()
    assert python is not None
    done = subprocess.run(
        [python, "-I", "-c", CLIENT, path],
        user=uid,
        group=uid if uid != NOBODY else NOBODY,
        extra_groups=[],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
        cwd="/",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    decoder = FrameDecoder()
    decoder.feed(bytes.fromhex(done.stdout.strip()))
    body = decoder.next_frame()
    assert body is not None
    with contextlib.suppress(Exception):
        error: M.Error = M.reply_decoder.decode(body)
        return error
    reply: A.AdminReply = A.admin_reply_decoder.decode(body)
    return reply


def test_a_uid_named_with_admin_uid_is_served_and_others_are_refused(
    tmp_path: "os.PathLike[str]", second_user: int, socket_dir: str
) -> None:
    path = os.path.join(socket_dir, "admin.sock")
    data = os.path.join(tmp_path, "data")
    flags = ["--admin-uid", str(second_user), "--admin-socket", path]
    broker = BrokerProcess(data, flags).start()
    try:
        assert broker.wait_for_log("admin socket")
        served = _stats_as(second_user, path)
        assert isinstance(served, A.Stats) and served.rid == 7
        refused = _stats_as(NOBODY, path)
        assert isinstance(refused, M.Error)
        assert (refused.code, refused.rid) == (ErrorCode.PERMISSION_DENIED, 0)
        assert f"uid {NOBODY}" in refused.message
        assert os.stat(data).st_mode & 0o777 == 0o700  # the data directory stays private
    finally:
        broker.kill()


def test_admin_uid_with_the_socket_where_that_user_cannot_reach_it_refuses_to_start(
    tmp_path: "os.PathLike[str]", second_user: int
) -> None:
    data = os.path.join(tmp_path, "data")
    broker = BrokerProcess(data, ["--admin-uid", str(second_user)]).start(wait=False)
    assert broker.process is not None
    assert broker.process.wait(TIMEOUT_S) == 78
    broker.kill()
    log = "".join(broker.log)
    assert f"--admin-uid {second_user}: that user cannot reach the admin socket" in log
    assert "--admin-socket" in log and "Traceback" not in log


def test_without_admin_uid_another_user_cannot_even_reach_the_socket(
    tmp_path: "os.PathLike[str]", second_user: int
) -> None:
    data = os.path.join(tmp_path, "data")
    path = os.path.join(data, "admin.sock")
    broker = BrokerProcess(data).start()
    try:
        assert broker.wait_for_log("admin socket")
        assert os.stat(path).st_mode & 0o777 == 0o600 and os.stat(data).st_mode & 0o777 == 0o700
        python = _system_python()
        assert python is not None
        done = subprocess.run(
            [python, "-I", "-c", CLIENT, path],
            user=second_user,
            group=second_user,
            extra_groups=[],
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            check=False,
            cwd="/",
        )
        assert done.returncode == 3 and "Permission denied" in done.stdout, done
    finally:
        broker.kill()
