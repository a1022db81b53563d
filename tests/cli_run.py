"""Run the ``leash`` command line in this process, as its console script would.

``run_cli("ping", "--data-dir", d)`` calls ``leash.client.cli.main`` with the
words, its standard output and error captured, and the environment without a
developer's ``LEASH_*`` settings (plus ``env``); it returns what a finished
subprocess would: the exit status and both texts. Commands that replace the
process (``serve``, ``journal``, ``web``) or that need a process of their own
(signals, a closed pipe, shell completion) are run as real subprocesses by
their tests instead.
"""

import contextlib
import io
import os
from typing import NamedTuple
from unittest import mock

from leash.client.cli import main


class Ran(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without a developer's LEASH_* settings, plus ``extra``."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("LEASH_")}, **extra}


def run_cli(*args: str, env: dict[str, str] | None = None) -> Ran:
    out, err = io.StringIO(), io.StringIO()
    with (
        mock.patch.dict(os.environ, env if env is not None else clean_env(), clear=True),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        code = main(list(args))
    return Ran(code, out.getvalue(), err.getvalue())
