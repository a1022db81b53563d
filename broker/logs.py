"""The broker's log: one line per event on stderr (``leash._logs``, shared
with the worker: ``text`` or ``json`` lines)."""

from leash._logs import TEXT_FORMAT, JsonFormatter, setup

__all__ = ["TEXT_FORMAT", "JsonFormatter", "setup"]
