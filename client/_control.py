"""Handler control: how a handler's run ends, and what the worker tells the broker.

A handler returns (the job is acked) or raises. What it raises says what
happens next:

- ``Retry(delay_s)``: the attempt failed; run it again after ``delay_s``
  seconds instead of the job's backoff (``fail`` with ``retry_in_ms``). Out
  of attempts, the job is dead as after any failure.
- ``Discard(reason)``: the attempt failed and running it again cannot help;
  the job goes to the dead set now (``fail`` with ``dead``).
- ``Snooze(delay_s)``: not now; back to the queue, scheduled ``delay_s``
  seconds ahead, *without* counting an attempt (``release`` with
  ``delay_ms``). A job that snoozes for ever runs for ever: bound it
  yourself (``current_job().created_ms`` says how old it is).
- Any other exception fails the attempt. The handler's ``give_up_on``
  exceptions make the job dead at once, as ``Discard`` does; if it names
  ``retry_on`` exceptions, only those are retried (after the backoff) and
  any other gives up. ``give_up_on`` is checked first.

Raised ``from`` an exception (``raise Retry(30) from exc``), a ``Retry`` or
``Discard`` reports that exception (type, message, traceback) as the
attempt's error; otherwise its own, with its ``reason``.

Pure: ``outcome_of`` maps an exception to an ``Outcome``; the worker sends it
(``leash.client._settle``).
"""

from dataclasses import dataclass

from leash.protocol import limits
from leash.protocol.messages import ErrorInfo

from ._types import error_info

Classes = tuple[type[BaseException], ...]
ClassesOption = type[BaseException] | Classes  # retry_on= / give_up_on=: one class or several
DELAY_MAX_S = limits.SCHEDULE_HORIZON_MS / 1000  # the longest a Retry or Snooze may wait


class Control(Exception):
    """Raised by a handler to say what happens to its job (not an error of its own)."""


class Retry(Control):
    """Fail this attempt and run the job again after ``delay_s`` seconds, not the backoff."""

    def __init__(self, delay_s: float, reason: str = "") -> None:
        self.delay_ms = _delay_ms(delay_s, "Retry")
        self.reason = reason
        super().__init__(reason or f"retry in {delay_s:g} s")


class Discard(Control):
    """Fail this attempt and give up: the job goes to the dead set now."""

    def __init__(self, reason: str = "") -> None:
        self.reason = reason
        super().__init__(reason or "discarded by its handler")


class Snooze(Control):
    """Put the job back, to run again after ``delay_s`` seconds; no attempt is counted."""

    def __init__(self, delay_s: float) -> None:
        self.delay_ms = _delay_ms(delay_s, "Snooze")
        super().__init__(f"snoozed for {delay_s:g} s")


for _cls in (Control, Retry, Discard, Snooze):
    _cls.__module__ = "leash"  # as the broker's views name them: leash.Retry, leash.Discard


def _delay_ms(delay_s: float, name: str) -> int:
    if not 0 <= delay_s <= DELAY_MAX_S:
        raise ValueError(f"{name} delay_s must be from 0 to {DELAY_MAX_S:g}, not {delay_s!r}")
    return round(delay_s * 1000)


@dataclass(frozen=True, slots=True)
class Failure:
    """A failed attempt: ``fail`` with this error, after ``retry_in_ms`` (None:
    the job's backoff), or ``dead`` at once."""

    error: ErrorInfo
    retry_in_ms: int | None = None
    dead: bool = False


@dataclass(frozen=True, slots=True)
class Snoozed:
    """``release`` with this delay: back later, no attempt counted."""

    delay_ms: int


Outcome = Failure | Snoozed | None  # None: acked


@dataclass(frozen=True, slots=True)
class Policy:
    """A handler's classification of the exceptions it raises."""

    retry_on: Classes = ()
    give_up_on: Classes = ()

    def gives_up(self, exc: BaseException) -> bool:
        if isinstance(exc, self.give_up_on):
            return True
        return bool(self.retry_on) and not isinstance(exc, self.retry_on)


DEFAULT_POLICY = Policy()


def classes(given: ClassesOption, name: str) -> Classes:
    """``retry_on`` / ``give_up_on`` as a tuple of exception classes, checked."""
    found = given if isinstance(given, tuple) else (given,)
    for cls in found:
        if not (isinstance(cls, type) and issubclass(cls, BaseException)):
            raise TypeError(f"{name} takes exception classes, not {cls!r}")
        if issubclass(cls, Control):
            raise TypeError(f"{name} cannot name {cls.__name__}: it is raised to steer a job")
    return found


def outcome_of(exc: BaseException, policy: Policy = DEFAULT_POLICY) -> Outcome:
    """What a handler that raised ``exc`` comes to."""
    match exc:
        case Snooze():
            return Snoozed(exc.delay_ms)
        case Retry():
            return Failure(_reported(exc), retry_in_ms=exc.delay_ms)
        case Discard():
            return Failure(_reported(exc), dead=True)
        case _:
            return Failure(error_info(exc), dead=policy.gives_up(exc))


def _reported(exc: Retry | Discard) -> ErrorInfo:
    """The error a Retry or Discard reports: the exception it was raised from, if any."""
    cause = exc.__cause__
    if cause is None:
        return error_info(exc)
    info = error_info(cause)
    if exc.reason:
        message = f"{exc.reason}: {info.message}"
        info = error_info(ErrorInfo(type=info.type, message=message, backtrace=info.backtrace))
    return info
