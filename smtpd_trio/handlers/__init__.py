"""Ready-made handlers: :class:`Debugging` (print), :class:`Sink` (discard), :class:`Maildir`.

:func:`from_spec` builds one from the CLI's ``--handler`` text (``debugging``, ``sink``,
``maildir:DIR``).
"""

from __future__ import annotations

from smtpd_trio.errors import ConfigError

from .debugging import Debugging
from .maildir import Maildir
from .sink import Sink

__all__ = ["Debugging", "Maildir", "Sink", "from_spec"]


def from_spec(spec: str) -> Debugging | Sink | Maildir:
    """``"debugging"``, ``"sink"`` or ``"maildir:DIR"`` → a handler; ConfigError otherwise."""
    name, _, arg = spec.partition(":")
    if name == "debugging" and not arg:
        return Debugging()
    if name == "sink" and not arg:
        return Sink()
    if name == "maildir":
        if not arg:
            raise ConfigError("maildir needs a directory: --handler maildir:DIR")
        return Maildir(arg)
    raise ConfigError(f"unknown handler {spec!r}: choose debugging, sink or maildir:DIR")
