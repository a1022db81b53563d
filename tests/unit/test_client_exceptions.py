"""One exception root for the client: every exception class the client
package defines derives from LeashError and is drawn in the tree at the top
of client/_exceptions.py, except the handler's controls (Retry, Discard,
Snooze), which a handler raises and the worker catches."""

import ast
import importlib
import inspect
import pkgutil

import leash.client
from leash.client import _control, _exceptions
from leash.client._exceptions import LeashError

CONTROLS = {"Control", "Retry", "Discard", "Snooze"}  # raised by handlers, not by the client


def client_exception_classes() -> dict[str, type[BaseException]]:
    """The exception classes defined (not imported) in the client's modules."""
    found: dict[str, type[BaseException]] = {}
    for module_info in pkgutil.iter_modules(leash.client.__path__):
        if module_info.name == "__main__":
            continue  # running it is running the command
        module = importlib.import_module(f"leash.client.{module_info.name}")
        tree = ast.parse(inspect.getsource(module))
        defined = {node.name for node in tree.body if isinstance(node, ast.ClassDef)}
        for name in defined:
            value = getattr(module, name)
            if issubclass(value, BaseException):
                found[name] = value
    return found


def test_every_exception_the_client_defines_is_a_leash_error_but_the_handler_controls() -> None:
    classes = client_exception_classes()
    assert {"CliError", "UsageError", "ConnectionLost", "Retry"} <= set(classes)
    outside = {name for name, cls in classes.items() if not issubclass(cls, LeashError)}
    assert outside == CONTROLS
    assert all(issubclass(getattr(_control, name), _control.Control) for name in CONTROLS)


def test_the_tree_in_the_docstring_names_every_leash_error() -> None:
    tree = _exceptions.__doc__ or ""
    classes = client_exception_classes()
    missing = [
        name
        for name, cls in classes.items()
        if issubclass(cls, LeashError) and f" {name} " not in tree and f"─ {name}" not in tree
    ]
    assert missing == []
