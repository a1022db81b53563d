"""One exception root for the broker (broker/errors.py): every exception
class defined anywhere in ``leash.broker`` derives from ``BrokerError``,
and the tree drawn in broker/errors.py names each of them."""

import importlib
import inspect
import pkgutil
import re

import leash.broker
from leash.broker import errors
from leash.broker.core.common import Rejected
from leash.broker.journal.reading import Unreadable
from leash.broker.journal.snapshot import NoRoom
from leash.broker.settings import SettingError


def broker_exceptions() -> dict[str, type[BaseException]]:
    """Every exception class a module of leash.broker defines, by name."""
    found: dict[str, type[BaseException]] = {}
    prefix = leash.broker.__name__ + "."
    for module_info in pkgutil.walk_packages(leash.broker.__path__, prefix):
        module = importlib.import_module(module_info.name)
        for name, value in vars(module).items():
            defined_here = getattr(value, "__module__", None) == module.__name__
            if inspect.isclass(value) and issubclass(value, BaseException) and defined_here:
                found[f"{module.__name__}.{name}"] = value
    return found


def test_every_broker_exception_derives_from_broker_error() -> None:
    found = broker_exceptions()
    assert len(found) >= 19 and "leash.broker.core.common.Rejected" in found
    strays = [name for name, cls in found.items() if not issubclass(cls, errors.BrokerError)]
    assert strays == [], f"derive these from leash.broker.errors.BrokerError: {strays}"


def test_the_tree_in_broker_errors_names_every_broker_exception() -> None:
    tree = errors.__doc__ or ""
    named = set(re.findall(r"[─└├]── (\w+)", tree)) | {"BrokerError"}
    missing = [name for name in broker_exceptions() if name.rsplit(".", 1)[1] not in named]
    assert missing == [], f"add these to the tree in broker/errors.py: {missing}"


def test_callers_still_catch_them_by_the_standard_classes() -> None:
    assert issubclass(SettingError, ValueError) and issubclass(NoRoom, OSError)
    assert issubclass(Unreadable, ValueError) and not issubclass(Rejected, ValueError)
    room = NoRoom(28, "no space left")
    assert room.errno == 28 and isinstance(room, errors.BrokerError)
