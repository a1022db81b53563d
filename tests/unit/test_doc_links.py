"""The README and docs/ link to each other: every relative link resolves to a
file that exists, and every ``#anchor`` to a heading of the file it names,
as GitHub makes heading anchors. The README's contents list names each of
its sections, and every ``make`` target the documents name is the
Makefile's."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^()\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def prose(text: str) -> str:
    """The text without its fenced blocks (a ``# `` line there is a comment)."""
    return FENCE.sub("", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as '-'."""
    text = re.sub(r"[`*_]|\[|\]\([^)]*\)", "", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for heading in re.findall(r"^#{1,6} (.+)$", prose(path.read_text(encoding="utf-8")), re.M):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> list[str]:
    return LINK.findall(prose(path.read_text(encoding="utf-8")))


def test_slugs_are_githubs() -> None:
    assert slug("Schedules (cron and intervals)") == "schedules-cron-and-intervals"
    assert slug("Faktory's protocol") == "faktorys-protocol"
    assert slug("3.5 Typed values in args") == "35-typed-values-in-args"
    assert slug("The `leash` command") == "the-leash-command"
    assert slug("A full disk refuses growth, not work") == "a-full-disk-refuses-growth-not-work"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(document: Path) -> None:
    broken = []
    for target in links(document):
        if re.match(r"^[a-z]+:", target):
            continue  # http(s), mailto: not followed here
        file_part, _, anchor = target.partition("#")
        linked = (document.parent / file_part).resolve() if file_part else document
        if not linked.exists():
            broken.append(f"{target}: no file {linked}")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target}: no heading #{anchor} in {linked.name}")
    assert not broken, "\n".join(broken)


def test_a_broken_link_is_found(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# A\n\n## Here\n\n[ok](#here) [gone](b.md) [bad](#there)\n")
    assert links(tmp_path / "a.md") == ["#here", "b.md", "#there"]
    assert anchors(tmp_path / "a.md") == {"a", "here"}


def test_the_readmes_contents_list_every_section() -> None:
    readme = prose((ROOT / "README.md").read_text(encoding="utf-8"))
    contents = re.search(r"^## Contents\n(.*?)^## ", readme, re.MULTILINE | re.DOTALL)
    assert contents is not None
    listed = set(re.findall(r"\]\(#([^)]+)\)", contents.group(1)))
    sections = {slug(title) for title in re.findall(r"^## (.+)$", readme, re.M)}
    assert sections - listed == {"contents"}
    assert listed <= sections


def make_targets_named(text: str) -> set[str]:
    """``make X`` in backquotes in the prose, and lines ``make X`` of sh blocks."""
    named = set(re.findall(r"`make\s+([a-z][a-z-]*)", prose(text)))
    for block in re.findall(r"^```sh\n(.*?)^```", text, re.MULTILINE | re.DOTALL):
        named |= set(re.findall(r"^make ([a-z][a-z-]*)", block, re.MULTILINE))
    return named


def test_every_make_target_the_documents_name_is_the_makefiles() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, re.MULTILINE))
    named = {
        target
        for document in DOCUMENTS
        for target in make_targets_named(document.read_text(encoding="utf-8"))
    }
    assert {"test", "test-fast", "check", "fault-heavy"} <= named
    assert named <= targets, sorted(named - targets)
    assert make_targets_named("`make\n  nothing-here`\n```sh\nmake bench  # x\n```\n") == {
        "nothing-here",
        "bench",
    }
