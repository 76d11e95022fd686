"""User-facing errors: the CLI prints their message and exits with code 2, without a traceback."""

from __future__ import annotations

from collections.abc import Iterable


class UserError(Exception):
    """A problem with the user's input (a file, a field, a value), not a bug.

    ``field`` names the config field or file the message is about; it is printed first.
    """

    exit_code = 2

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}" if field else message)


class UnknownNameError(UserError):
    """A registry look-up failed; the message lists the valid names and the closest match."""

    def __init__(self, kind: str, name: str, valid: Iterable[str], close: list[str], *, field: str | None = None):
        valid = sorted(valid)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        super().__init__(f"unknown {kind} {name!r}.{hint} Valid {kind} names: {', '.join(valid)}", field=field)
        self.name = name
        self.valid = valid
        self.close = close


class MissingResource(UserError):
    """Something this machine lacks rather than something the input gets wrong: a weight file, a GPU, a
    data folder. ``ldct-bench validate`` reports it as a warning with the fix (``--strict``: an error),
    so a matrix can be checked before the weights are fetched or on another machine than the one that
    trains it; ``run`` refuses it like any :class:`UserError` (exit 2)."""


class SkippedWarning(UserWarning):
    """A file of a run folder that cannot be used and is skipped, where skipping loses nothing (a cell's
    ``config.yaml`` that is not a cell config, say): ``status`` and ``analyze`` go on without it. The
    CLI prints it as ``warning: <message>`` (:func:`benchmark.cli.main`)."""
