"""What the generators of docs/ share: a section between two markers of a
document, printed, checked or rewritten from what the code makes.

    python docs/GENERATOR.py           # print the generated section
    python docs/GENERATOR.py --write   # rewrite it in its document
    python docs/GENERATOR.py --check   # exit 1 if the document is stale
"""

import argparse
import sys
from collections.abc import Callable
from pathlib import Path


def split_document(text: str, begin_marker: str, end_marker: str) -> tuple[str, str, str]:
    """The document before, inside and after the generated section (markers inside)."""
    begin = text.index(begin_marker)
    end = text.index(end_marker, begin) + len(end_marker)
    return text[:begin], text[begin:end], text[end:]


def main(
    argv: list[str] | None,
    *,
    description: str,
    render: Callable[[], str],
    doc: Path,
    markers: tuple[str, str],
    script: str,
) -> int:
    parser = argparse.ArgumentParser(description=description)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="rewrite the section in the doc")
    mode.add_argument("--check", action="store_true", help="exit 1 if the doc is stale")
    args = parser.parse_args(argv)
    section = render()
    if not (args.write or args.check):
        print(section)
        return 0
    before, current, after = split_document(doc.read_text(encoding="utf-8"), *markers)
    if args.check:
        stale = current != section
        if stale:
            print(f"{doc} is stale: run {script} --write", file=sys.stderr)
        return 1 if stale else 0
    doc.write_text(before + section + after, encoding="utf-8")
    return 0
