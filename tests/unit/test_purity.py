"""The dependency rules of the design, checked on the source.

``protocol/`` and ``broker/core/`` are pure: no I/O, no clock, no randomness,
no concurrency. ``protocol`` imports nothing of ours; ``client`` never imports
``broker``; ``leash.broker.core`` imports neither ``leash.broker.journal`` nor
``leash.broker.server``; ``broker/core/batches`` imports none of the core's
dispatchers (apply, decide, replay, tick, admin), which call it. Imports are
read with ``ast``, so a package that does not exist yet simply has no files
to check.
"""

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Modules that reach the clock, randomness, the file system, the network, other
# threads or processes. The first nine are the rule; the rest are their siblings.
IMPURE_MODULES = frozenset(
    {
        "asyncio",
        "time",
        "random",
        "os",
        "socket",
        "threading",
        "uvloop",
        "select",
        "subprocess",
        "selectors",
        "multiprocessing",
        "concurrent",
        "secrets",
        "signal",
        "shutil",
        "tempfile",
    }
)
PURE_PACKAGES = ("protocol", "broker/core")

# (package, the top-level-qualified module prefixes it may not import)
FORBIDDEN_DEPENDENCIES = [
    ("protocol", ("leash.broker", "leash.client")),
    ("client", ("leash.broker",)),
    ("broker/core", ("leash.broker.journal", "leash.broker.server", "leash.client")),
    # The batches are called by the core's dispatchers, never the other way
    (
        "broker/core/batches",
        tuple(f"leash.broker.core.{m}" for m in ("apply", "decide", "replay", "tick", "admin")),
    ),
]


def python_files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def module_name(path: Path) -> str:
    """The module's name as installed: every folder maps into the ``leash`` package."""
    parts = ["leash", *path.relative_to(ROOT).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(source: str, importer: str, *, is_package: bool) -> Iterator[tuple[int, str]]:
    """Every module ``source`` imports, made absolute, with its line number.

    Dynamic imports (``__import__``, ``importlib.import_module``) are reported as
    the module ``importlib`` so a pure package cannot hide an import behind them.
    """
    package = importer if is_package else importer.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".") if node.level else []
            if node.level > 1:
                base = base[: len(base) - (node.level - 1)]
            module = ".".join([*base, *([node.module] if node.module else [])])
            yield node.lineno, module
            # `from leash.broker import journal` imports leash.broker.journal
            for alias in node.names:
                yield node.lineno, f"{module}.{alias.name}"
        elif isinstance(node, ast.Call):
            function = node.func
            name = getattr(function, "id", None) or getattr(function, "attr", None)
            if name in ("__import__", "import_module"):
                yield node.lineno, "importlib"


def imports_of(path: Path) -> Iterator[tuple[int, str]]:
    source = path.read_text(encoding="utf-8")
    yield from imported_modules(source, module_name(path), is_package=path.name == "__init__.py")


def is_within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def impure_imports(path: Path) -> list[str]:
    found = []
    for line, module in imports_of(path):
        top = module.split(".")[0]
        if top in IMPURE_MODULES or top == "importlib":
            found.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    return found


@pytest.mark.parametrize("package", PURE_PACKAGES)
def test_pure_packages_import_no_io_clock_randomness_or_concurrency(package: str) -> None:
    problems = [problem for path in python_files(package) for problem in impure_imports(path)]
    assert problems == []


@pytest.mark.parametrize(("package", "forbidden"), FORBIDDEN_DEPENDENCIES)
def test_dependencies_point_one_way(package: str, forbidden: tuple[str, ...]) -> None:
    problems = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in python_files(package)
        for line, module in imports_of(path)
        if any(is_within(module, prefix) for prefix in forbidden)
    ]
    assert problems == []


def test_the_protocol_package_is_checked() -> None:
    assert {path.name for path in python_files("protocol")} >= {"frames.py", "messages.py"}


# --- the checker itself --------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import asyncio", "asyncio"),
        ("import os.path", "os.path"),
        ("from time import monotonic", "time"),
        ("import random as r", "random"),
        ("from concurrent.futures import Future", "concurrent.futures"),
        ("importlib.import_module('socket')", "importlib"),
        ("__import__('threading')", "importlib"),
        ("def f():\n    import subprocess", "subprocess"),
    ],
)
def test_the_checker_sees_every_form_of_import(source: str, expected: str) -> None:
    modules = [module for _, module in imported_modules(source, "broker.core.x", is_package=False)]
    assert expected in modules


@pytest.mark.parametrize(
    ("source", "importer", "is_package", "expected"),
    [
        ("from . import journal", "leash.broker.core", True, "leash.broker.core.journal"),
        ("from .. import journal", "leash.broker.core", True, "leash.broker.journal"),
        ("from ..server import app", "leash.broker.core.state", False, "leash.broker.server"),
        ("from leash.broker import server", "leash.client.run", False, "leash.broker.server"),
    ],
)
def test_the_checker_resolves_relative_imports(
    source: str, importer: str, is_package: bool, expected: str
) -> None:
    modules = [module for _, module in imported_modules(source, importer, is_package=is_package)]
    assert expected in modules


def test_no_code_imports_the_folders_by_their_top_level_names() -> None:
    """Installed, only ``leash`` exists: ``client``, ``broker`` and ``protocol`` are its parts."""
    problems = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for package in ("protocol", "broker", "client", "tests", "bench", "leash", "docs")
        for path in python_files(package)
        for line, module in imports_of(path)
        if module.split(".")[0] in ("client", "broker", "protocol")
    ]
    assert problems == []
