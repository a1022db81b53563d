"""Output cut short by its reader (``leash dead | head``): end quietly.

Python ignores SIGPIPE, so a write to a pipe whose reader has gone raises
``BrokenPipeError``; a command line tool then stops without a traceback and
exits as one killed by SIGPIPE would (141). Standard output is pointed at
/dev/null first, so that the interpreter's last flush at exit fails no more.
"""

import os
import sys

EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE


def quiet_broken_pipe() -> int:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_BROKEN_PIPE
