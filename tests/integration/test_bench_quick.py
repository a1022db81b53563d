"""The benchmark harness still works: ``python -m bench --quick`` runs once.

It starts real brokers on 127.0.0.1 (Leash always; beanstalkd and Redis when
installed) and must produce a well-formed report in which every Leash cell
has a number. No number is judged here: speed is measured in bench/, never
asserted in tests.
"""

import json
import os
import re
import subprocess
import sys

import pytest

from bench.plan import MEASUREMENTS
from bench.servers import SYSTEMS, missing

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUN_TIMEOUT_S = 400
pytestmark = pytest.mark.timeout(RUN_TIMEOUT_S + 60)  # the first test waits for the whole run


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, object], str]:
    out = tmp_path_factory.mktemp("bench-out")
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    text = (out / "results.md").read_text()
    cells = json.loads((out / "results.json").read_text())
    return text, cells, result.stdout


def _tables(text: str, heading: str) -> list[list[list[str]]]:
    """The tables of a section: rows of cells."""
    section = text.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    tables: list[list[list[str]]] = []
    for block in section.split("\n\n"):
        lines = [line for line in block.splitlines() if line.startswith("|")]
        if lines:
            tables.append([[c.strip() for c in line.strip("|").split("|")] for line in lines])
    return tables


def _table_rows(text: str, heading: str) -> list[list[str]]:
    return _tables(text, heading)[0]


def test_every_leash_cell_has_a_number(quick_run: tuple[str, dict[str, object], str]) -> None:
    text, _, _ = quick_run
    for heading in (
        "At equal durability: fsync at most every 50 ms",
        "At equal durability: fsync before the reply",
    ):
        rates, cpu = _tables(text, heading)
        assert rates[0][2].startswith("Leash"), rates[0]
        assert len(rates) == 2 + 14, heading  # header, rule, 11 throughput + 3 latency rows
        assert len(cpu) == 2 + 11, heading  # the server's CPU per job in each throughput cell
        for row in rates[2:] + cpu[2:]:
            assert len(row) == 7, row  # workload, unit, Leash, two peers with their ratios
            assert re.fullmatch(r"[0-9][0-9,.]*", row[2]), row


def test_the_fsync_memory_and_target_tables_are_filled_for_leash(
    quick_run: tuple[str, dict[str, object], str],
) -> None:
    text, _, _ = quick_run
    for row in _table_rows(text, "The cost of each fsync policy (Leash)")[2:]:
        assert all(re.fullmatch(r"[0-9][0-9,.]*", c) for c in row[2:5]), row
    memory = _table_rows(text, "Memory and restart after a kill (20,000 queued jobs)")[2:]
    assert [row[0].split(" (lower")[0] for row in memory][:2] == [
        "memory per queued job (RSS)",
        "restart after a kill: start to first answer, per million records written",
    ]
    assert all(re.fullmatch(r"[0-9][0-9,.]*", row[2]) for row in memory), memory
    verdicts = [row[2] for row in _table_rows(text, "Targets")[2:]]
    assert len(verdicts) == 27 and set(verdicts) <= {"met", "not met", "—"}, verdicts


def test_every_cell_of_an_installed_system_ran_and_a_missing_peer_says_how_to_install_it(
    quick_run: tuple[str, dict[str, object], str],
) -> None:
    text, cells, _ = quick_run
    ran = cells["cells"]
    assert isinstance(ran, dict) and cells["errors"] == {}
    for system in SYSTEMS:
        why = missing(system.kind)
        if why:
            assert f"- {system.label}: {why}" in text
            assert "apt-get install" in why
            continue
        for measurement in MEASUREMENTS:
            if measurement.applies_to(system):
                assert f"{measurement.key}/{system.key}" in ran, (measurement.key, system.key)
