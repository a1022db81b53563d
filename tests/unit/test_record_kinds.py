"""The record-kind checklist (docs/architecture.md, "Adding a record kind"):
every kind in ``records.Record`` is handled everywhere a kind must be, and a
kind left out of one place fails here with the kind and the place named.

- apply, replay's classification and tally name it in their ``match`` on
  the record (read from their source: a kind caught by a wildcard is not
  handled), and the wildcard of each is ``assert_never``;
- a golden fixture holds it (tests/fixtures/v3, made by make_v3.py, or
  v3-kinds, made by make_v3_kinds.py), so its encoding is pinned;
- the fixtures' records, in order, go through tally, apply and replay: each
  kind is applied to a state where it is valid, and replay gives what
  apply gives;
- docs/protocol.md's and docs/architecture.md's record catalogues list it
  (and list no kind that does not exist).
"""

import ast
import importlib
import itertools
import re
import typing
from pathlib import Path

import msgspec

from leash.broker.core import CoreConfig, image
from leash.broker.core import records as R
from leash.broker.core.apply import apply
from leash.broker.core.checks import check_invariants
from leash.broker.core.records import frame_decoder, record_encoder
from leash.broker.core.replay import Replay
from leash.broker.core.state import State, canonical
from leash.broker.core.tally import tally
from leash.broker.journal import format as F
from leash.broker.journal import snapshot
from leash.broker.journal.disk import OsDisk
from leash.broker.journal.tools import _plain
from tests.journal_kit import read_file, record_offsets, replayed
from tests.unit.test_golden_files import _records_of, assert_same_or_newer

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
GOLDEN = [FIXTURES / "v3", FIXTURES / "v3-kinds"]
KINDS = [kind.__name__ for kind in typing.get_args(R.Record)]
# (document, the heading of its record catalogue)
CATALOGUES = [
    (ROOT / "docs" / "protocol.md", "### 8.21 Journal records"),
    (ROOT / "docs" / "architecture.md", "## Record catalogue"),
]
# (module, function whose match on ``record`` must name every kind)
DISPATCHES = [
    ("apply", "apply"),
    ("replay", "apply"),  # Replay.apply: which records defer, build or flush
    ("tally", "tally"),
]


def _named_classes(pattern: ast.pattern) -> set[str]:
    match pattern:
        case ast.MatchClass(cls=ast.Attribute(attr=name)) | ast.MatchClass(cls=ast.Name(id=name)):
            return {name}
        case ast.MatchOr(patterns=patterns):
            return set().union(*(_named_classes(p) for p in patterns))
        case ast.MatchAs(pattern=inner) if inner is not None:
            return _named_classes(inner)
        case _:
            return set()


def _calls_assert_never(body: list[ast.stmt]) -> bool:
    return any(
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "assert_never"
        for stmt in body
        for node in ast.walk(stmt)
    )


def _dispatch(path: Path, function: str) -> tuple[set[str], bool]:
    """The kinds the first ``match record`` in ``function`` names in its
    cases, and whether its wildcard case calls ``assert_never``."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if not (isinstance(node, ast.FunctionDef) and node.name == function):
            continue
        for inner in ast.walk(node):
            if isinstance(inner, ast.Match) and ast.unparse(inner.subject) == "record":
                named = set().union(*(_named_classes(case.pattern) for case in inner.cases))
                wildcards = [c for c in inner.cases if ast.unparse(c.pattern) == "_"]
                return named, len(wildcards) == 1 and _calls_assert_never(wildcards[0].body)
    raise AssertionError(f"{path.name}: {function}() has no `match record`")


def dispatch_problems(kinds: list[str]) -> list[str]:
    problems = []
    for module, function in DISPATCHES:
        path = Path(importlib.import_module(f"leash.broker.core.{module}").__file__ or "")
        named, exhaustive = _dispatch(path, function)
        where = f"broker/core/{path.name}"
        if not exhaustive:
            problems.append(f"{where}: {function}()'s match does not end in assert_never")
        problems += [
            f"{kind}: no case in {where} {function}()" for kind in kinds if kind not in named
        ]
    return problems


def golden_records(directory: Path) -> list[R.Record]:
    """The records of a golden data directory's segments, in order."""
    return [record for _, record in _records_of(directory)]


def golden_problems(kinds: list[str]) -> list[str]:
    held = {type(record).__name__ for d in GOLDEN for record in golden_records(d)}
    names = ", ".join(str(d.relative_to(ROOT)) for d in GOLDEN)
    return [f"{kind}: in no golden fixture ({names})" for kind in kinds if kind not in held]


def catalogue(path: Path, heading: str) -> list[str]:
    """The kinds the first column of the table under ``heading`` names."""
    text = path.read_text()
    assert heading in text, f"{path.name} has no section {heading!r}"
    section = text.split(heading, 1)[1]
    level = heading.split(" ", 1)[0]
    section = re.split(rf"^#{{1,{len(level)}}} ", section, maxsplit=1, flags=re.MULTILINE)[0]
    return re.findall(r"^\| `([A-Za-z]+)` \|", section, flags=re.MULTILINE)


def catalogue_problems(kinds: list[str]) -> list[str]:
    problems = []
    for path, heading in CATALOGUES:
        listed = catalogue(path, heading)
        where = f"{path.relative_to(ROOT)} ({heading.lstrip('# ')})"
        problems += [f"{kind}: not in {where}" for kind in kinds if kind not in listed]
        problems += [
            f"{name}: in {where}, but no record kind" for name in listed if name not in kinds
        ]
    return problems


def test_every_record_kind_has_a_case_in_apply_replay_and_tally() -> None:
    problems = dispatch_problems(KINDS)
    assert problems == [], "\n".join(problems)


def test_every_record_kind_is_in_a_golden_fixture() -> None:
    problems = golden_problems(KINDS)
    assert problems == [], "\n".join(problems)


def test_every_record_kind_is_in_both_record_catalogues() -> None:
    problems = catalogue_problems(KINDS)
    assert problems == [], "\n".join(problems)


def test_every_record_kind_tallies_applies_and_replays_as_apply_does() -> None:
    """Each fixture's records in order, from an empty state: tally reads each
    before it is applied, apply applies it, and replay gives the same state."""
    applied: set[str] = set()
    for directory in GOLDEN:
        state, replayed = State(), Replay(State())
        for record in golden_records(directory):
            tally(state, record)
            apply(state, record)
            replayed.apply(record)
            applied.add(type(record).__name__)
        assert check_invariants(state) == [], directory
        assert canonical(replayed.finish()) == canonical(state), directory
    missing = [f"{kind}: never applied from a fixture" for kind in KINDS if kind not in applied]
    assert missing == [], "\n".join(missing)


def test_the_checks_name_a_kind_missing_everywhere() -> None:
    """A kind that no place knows fails every check, each naming it and the place."""
    problems = (
        dispatch_problems(["Unheard"])
        + golden_problems(["Unheard"])
        + catalogue_problems([*KINDS, "Unheard"])
    )
    places = ["apply.py apply()", "replay.py apply()", "tally.py tally()", "golden fixture"]
    places += ["docs/protocol.md", "docs/architecture.md"]
    for place in places:
        assert any(p.startswith("Unheard: ") and place in p for p in problems), (place, problems)


# --- tests/fixtures/v3-kinds (make_v3_kinds.py): golden as v3 is ------------------

V3_KINDS = FIXTURES / "v3-kinds"
V3_KINDS_COVERED = 19  # the records its snapshot covers


def test_the_v3_kinds_records_decode_to_what_was_written_and_encode_byte_for_byte() -> None:
    lines = (V3_KINDS / "records.jsonl").read_text().splitlines()
    written = [msgspec.json.decode(line)["record"] for line in lines]
    records = golden_records(V3_KINDS)
    decoded = [msgspec.json.decode(msgspec.json.encode(_plain(r))) for r in records]
    assert len(decoded) == len(written) == 27
    for now, then in zip(decoded, written, strict=True):
        assert_same_or_newer(now, then)
    for path in sorted(V3_KINDS.glob("journal-*.log")):
        data = read_file(str(path))
        assert F.decode_header(data).version == 3
        for start, end in itertools.pairwise(record_offsets(data)):
            scanned = F.scan_record(memoryview(data), start)
            assert isinstance(scanned, F.Scanned)
            encoded = [record_encoder.encode(r) for r in frame_decoder.decode(scanned.payload)]
            assert F.encode_frame(scanned.seq, encoded) == data[start:end]


def test_the_v3_kinds_snapshot_loads_to_the_state_of_the_records_it_covers() -> None:
    (path,) = V3_KINDS.glob("snapshot-*.snap")
    assert snapshot.read_header(OsDisk(), str(path)).through_seq == V3_KINDS_COVERED
    loaded = image.load(snapshot.read(OsDisk(), str(path)), CoreConfig())
    covered = golden_records(V3_KINDS)[:V3_KINDS_COVERED]
    assert canonical(loaded) == canonical(replayed(covered))
    assert check_invariants(loaded) == []
    assert {batch.state for batch in loaded.batches.values()} == {"committed", "abandoned"}
    assert loaded.processes["w2"].state == "quiet"
