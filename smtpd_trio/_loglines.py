"""The per-message and per-connection log lines, written without a ``LogRecord`` where
nothing but a line handler would see the record.

Two INFO lines grow with traffic: one per message ("message ... accepted") and one per
connection ("closed ..."). Through :mod:`logging`, each costs a ``LogRecord`` (some twenty
attributes, a file name split out of a path), the walk through loggers and handlers, a lock,
and the formatter: about 10 µs of CPU per text line on Python 3.11 (``bench/log_cost.py``),
twice what the same line costs this way. A :class:`LineHandler` (the CLI's
:class:`~smtpd_trio.cli.BufferedLogHandler`) can take a line from its parts instead. :func:`info`
gives it the line directly when the record would reach that handler and nothing else: no
other handler on the way, no filter on a logger or on the handler, the logger not disabled,
the handler's formatter a :class:`LineFormatter`. Anything else (a handler or filter of the
user's, another formatter) and the line goes through :mod:`logging` as before, so everything
logging lets a user configure still works; the fast way is only taken where no one could
tell the difference.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any, Final

_INFO: Final = logging.INFO
_INFO_NAME: Final = logging.getLevelName(logging.INFO)


class LineFormatter(logging.Formatter):
    """A formatter that can also format a line from its parts, without a record; for any
    record, :meth:`format` and :meth:`format_line` given the record's parts agree."""

    def format_line(
        self,
        created: float,
        msecs: float,
        levelname: str,
        name: str,
        message: str,
        fields: Mapping[Any, object],
    ) -> str:
        """The line for a record made at ``created`` (seconds since the epoch; ``msecs``,
        its milliseconds) at ``levelname`` by logger ``name``, with ``message`` (the
        arguments already merged in) and the structured fields (``extra={"smtpd": ...}``);
        without the line end."""
        raise NotImplementedError


class LineHandler(logging.Handler):
    """A handler that can take a formatted line without a record."""

    def write_line(self, line: str) -> None:
        """Write ``line`` (without its line end) as :meth:`emit` writes a formatted
        record."""
        raise NotImplementedError


def _sole_line_handler(logger: logging.Logger, level: int) -> LineHandler | None:
    """The handler a record of ``logger`` at ``level`` would reach, if it is the only one,
    a :class:`LineHandler` with a :class:`LineFormatter`, and nothing on the way (a filter,
    a disabled logger) could look at, change or stop the record; else None."""
    if logger.disabled:
        return None
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters:
            return None
        handlers = current.handlers
        if handlers:
            if len(handlers) != 1 or (current.propagate and current.parent is not None):
                return None
            handler = handlers[0]
            if (
                isinstance(handler, LineHandler)
                and not handler.filters
                and level >= handler.level
                and isinstance(handler.formatter, LineFormatter)
            ):
                return handler
            return None
        if not current.propagate:
            return None  # no handler at all: logging's last resort decides
        current = current.parent
    return None


def info(logger: logging.Logger, fields: Mapping[Any, object], msg: str, *args: object) -> None:
    """``logger.info(msg, *args, extra={"smtpd": fields})``, for a caller that has already
    checked ``logger.isEnabledFor(logging.INFO)``; the same line, without a record, where
    only a :class:`LineHandler` would see it."""
    handler = _sole_line_handler(logger, _INFO)
    if handler is None:
        logger.info(msg, *args, extra={"smtpd": fields})
        return
    formatter = handler.formatter
    assert isinstance(formatter, LineFormatter)
    created = time.time()
    try:
        line = formatter.format_line(
            created, (created - int(created)) * 1000, _INFO_NAME, logger.name, msg % args, fields
        )
    except Exception:
        # What logging does with a line it cannot format (Handler.handleError), not an
        # exception in the session that logs it.
        logger.info(msg, *args, extra={"smtpd": fields})
        return
    handler.write_line(line)
