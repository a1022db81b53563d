"""How much of each randomized test a tier runs.

``make test`` runs every test in full: the examples and steps each one
names. ``make test-fast`` sets ``HYPOTHESIS_PROFILE=fast``: hypothesis then
runs a quarter of each test's examples (the profile is registered in
tests/conftest.py; ``scaled`` gives the tests that name their own count the
same share), and each seeded walk its first seed only, at its full length
(``seeds``), so that what a walk asserts it reached still holds. The same
rules are checked on fewer runs, for every edit; the seeds are printed
either way.
"""

import os

PROFILE_VARIABLE = "HYPOTHESIS_PROFILE"
FAST_PROFILE = "fast"
FAST_SHARE = 4  # the fast tier runs one in this many examples
FAST = os.environ.get(PROFILE_VARIABLE) == FAST_PROFILE


def scaled(count: int) -> int:
    """``count`` examples in the full tier, a share of them in the fast one."""
    return max(1, count // FAST_SHARE) if FAST else count


def seeds(every: list[int]) -> list[int]:
    """The seeds of a walk: all of them in the full tier, the first in the fast one."""
    return every[:1] if FAST else every
