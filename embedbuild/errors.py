"""One exception family for everything a user can get wrong or the build can hit.

Every error carries *where* (a file, file:line, or a key path), *what* happened
and a *hint* saying what to do. Only the CLI prints them.
"""

from __future__ import annotations


class EmbedbuildError(Exception):
    """An expected failure, reported to the user as one short message.

    Args:
        message: what went wrong.
        where: file, file:line or key path the problem is located at.
        hint: what the user should do about it.
        log_tail: last lines of a step's log, shown under the message.
        log_path: where the full log is.
    """

    def __init__(
        self,
        message: str,
        *,
        where: str | None = None,
        hint: str | None = None,
        log_tail: str | None = None,
        log_path: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.where = where
        self.hint = hint
        self.log_tail = log_tail
        self.log_path = log_path

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message


class BoardError(EmbedbuildError):
    """A board or system definition is invalid."""


class SourceError(EmbedbuildError):
    """A source cannot be fetched or does not match its pinned hash."""


class ConfigError(EmbedbuildError):
    """A Kconfig request cannot be met."""


class StepError(EmbedbuildError):
    """An external command of a build step failed."""


class RecordError(EmbedbuildError):
    """A record of the store that cannot be read or is not what it must be."""
