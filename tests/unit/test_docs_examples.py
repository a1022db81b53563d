"""docs/protocol.md agrees with the code: example bytes, message names, codes, limits."""

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from leash.protocol import admin as A
from leash.protocol import limits as L
from leash.protocol.errors import ErrorCode
from leash.protocol.frames import FrameDecoder, encode_frame
from leash.protocol.messages import REQUEST_OPS, Reply, encoder, reply_decoder, request_decoder

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_examples", ROOT / "docs" / "gen_examples.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


gen = load_generator()


def section(number: int) -> str:
    """The text of the document's top-level section ``number``."""
    match = re.search(rf"^## {number}\. .*?(?=^## |\Z)", DOC, flags=re.MULTILINE | re.DOTALL)
    assert match, f"section {number} not found"
    return match.group(0)


def hex_dump_of(example_name: str) -> bytes:
    """The bytes of the hex dump under an example's heading, read from the document."""
    pattern = rf"^#### Example: {re.escape(example_name)}\n.*?```hexdump\n(.*?)```"
    match = re.search(pattern, DOC, flags=re.MULTILINE | re.DOTALL)
    assert match, f"no hex dump for {example_name!r}"
    data = bytearray()
    for line in match.group(1).splitlines():
        offset, _, rest = line.partition("  ")
        assert int(offset, 16) == len(data), f"{example_name}: offset {offset}"
        data += bytes.fromhex(rest.partition("|")[0])
    return bytes(data)


def test_the_generated_section_is_up_to_date() -> None:
    _, current, _ = gen.split_document(DOC)
    assert current == gen.render(), "run: .venv/bin/python docs/gen_examples.py --write"


def test_the_examples_cover_hello_welcome_push_pushed_fetch_jobs_ack_ok_and_error() -> None:
    tags = {type(example.message).__struct_config__.tag for example in gen.EXAMPLES}
    assert {"hello", "welcome", "push", "pushed", "fetch", "jobs", "ack", "ok", "error"} <= tags
    assert any(example.annotate for example in gen.EXAMPLES)


@pytest.mark.parametrize("example", gen.EXAMPLES, ids=lambda example: example.name)
def test_an_example_hex_dump_is_what_the_encoder_produces_today(example: Any) -> None:
    assert hex_dump_of(example.name) == encode_frame(encoder.encode(example.message))


@pytest.mark.parametrize("example", gen.EXAMPLES, ids=lambda example: example.name)
def test_an_example_frame_decodes_back_to_its_message(example: Any) -> None:
    decoder = FrameDecoder()
    decoder.feed(hex_dump_of(example.name))
    body = decoder.next_frame()
    assert body is not None
    assert decoder.buffered_bytes == 0
    is_reply = isinstance(example.message, Reply.__args__)  # type: ignore[attr-defined]
    decoded = (reply_decoder if is_reply else request_decoder).decode(body)
    assert decoded == example.message


def test_every_request_has_a_section() -> None:
    headings = re.findall(r"^### 6\.\d+ (.*)$", section(6), flags=re.MULTILINE)
    documented = {op for heading in headings for op in re.findall(r"`(\w+)`", heading)}
    assert documented == set(REQUEST_OPS)


def test_every_reply_has_a_section() -> None:
    headings = re.findall(r"^### 7\.\d+ (.*)$", section(7), flags=re.MULTILINE)
    documented = {tag for heading in headings for tag in re.findall(r"`(\w+)`", heading)}
    tags = {reply.__struct_config__.tag for reply in Reply.__args__}  # type: ignore[attr-defined]
    assert documented == tags


def test_every_admin_request_and_reply_is_in_section_13() -> None:
    text = section(13)
    table = re.search(r"### 13\.2 Requests\n(.*?)### 13\.3", text, flags=re.DOTALL)
    assert table
    documented = {op for cell in re.findall(r"^\| ([^|]+) \|", table.group(1), flags=re.MULTILINE)
                  for op in re.findall(r"`(\w+)`", cell)}  # fmt: skip
    assert documented == set(A.ADMIN_OPS)
    replies = set(re.findall(r"^#### `(\w+)`", text, flags=re.MULTILINE))
    replies |= {"ok", "job", "batch", "error"}
    tags = {reply.__struct_config__.tag for reply in A.AdminReply.__args__}  # type: ignore[attr-defined]
    assert replies == tags


def test_every_error_code_is_in_the_table() -> None:
    documented = set(re.findall(r"^\| `(\w+)` \|", section(9), flags=re.MULTILINE))
    assert documented == {code.value for code in ErrorCode}


def parse_number(text: str) -> int:
    text = text.replace(" ", "")
    base, _, exponent = text.partition("^")
    return int(base) ** int(exponent) if exponent else int(base)


def test_the_limits_table_matches_protocol_limits() -> None:
    rows = re.findall(r"^\| ((?:`\w+`(?:, )?)+) \| ([^|]+) \|", section(10), flags=re.MULTILINE)
    documented: dict[str, int] = {}
    for names, values in rows:
        pairs = zip(re.findall(r"`(\w+)`", names), values.split(","), strict=True)
        documented.update({name: parse_number(value) for name, value in pairs})
    numeric = {
        name: value for name, value in vars(L).items() if name.isupper() and isinstance(value, int)
    }
    assert documented == numeric
