"""Generate the settings table of docs/configuration.md from leash.broker.settings.

The table lists every ``leash serve`` setting with its flag, its ``LEASH_*``
variable, its key in the ``--config`` file, its default and its range, from
the same rows that make the flags. tests/unit/test_settings.py checks that
the document matches and that every flag of ``leash serve`` has a row.

Usage (from the repository root):

    .venv/bin/python docs/gen_settings.py           # print the generated table
    .venv/bin/python docs/gen_settings.py --write   # rewrite it in docs/configuration.md
    .venv/bin/python docs/gen_settings.py --check   # exit 1 if the document is stale
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # runnable without installing the package
    sys.path.insert(0, str(ROOT))
if str(ROOT / "docs") not in sys.path:  # gen_common, beside this file
    sys.path.insert(0, str(ROOT / "docs"))

import gen_common  # noqa: E402  (docs/gen_common.py, beside this file)

from leash.broker.settings import GROUPS, SETTINGS, Setting  # noqa: E402

DOC_PATH = ROOT / "docs" / "configuration.md"
BEGIN_MARKER = "<!-- BEGIN GENERATED SETTINGS: docs/gen_settings.py --write -->"
END_MARKER = "<!-- END GENERATED SETTINGS -->"


def default_text(setting: Setting) -> str:
    if setting.many:
        return "none"
    if setting.default is None or setting.default == "":
        return "unset"
    if setting.type is bool:
        return "false"
    return f"`{setting.default}`"


def values_text(setting: Setting) -> str:
    if setting.type is bool:
        return "true / false"
    if setting.choices:
        return " / ".join(f"`{choice}`" for choice in setting.choices)
    if setting.type is int:
        kind = "list of " if setting.many else ""
        return f"{kind}{setting.range_text()}".replace("between ", "").replace(" and ", "\u2013")
    return "text"


def render() -> str:
    out = [BEGIN_MARKER, ""]
    for group, title in GROUPS.items():
        out += [
            f"#### {title.capitalize()}",
            "",
            "| flag | variable | file key | default | values | what |",
            "|---|---|---|---|---|---|",
        ]
        for s in SETTINGS:
            if s.group == group:
                cells = [f"`{s.flag}`", f"`{s.env}`", f"`{s.name}`", default_text(s),
                         values_text(s), s.help.replace("|", "\\|")]  # fmt: skip
                out.append("| " + " | ".join(cells) + " |")
        out.append("")
    out.append(END_MARKER)
    return "\n".join(out)


def split_document(text: str) -> tuple[str, str, str]:
    """The document before, inside and after the generated section (markers inside)."""
    return gen_common.split_document(text, BEGIN_MARKER, END_MARKER)


def main(argv: list[str] | None = None) -> int:
    return gen_common.main(
        argv,
        description=__doc__.splitlines()[0],
        render=render,
        doc=DOC_PATH,
        markers=(BEGIN_MARKER, END_MARKER),
        script="docs/gen_settings.py",
    )


if __name__ == "__main__":
    sys.exit(main())
