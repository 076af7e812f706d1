"""Ready-made handlers: :class:`Debugging` (print), :class:`Sink` (discard), :class:`Maildir`,
:class:`Mbox`, :class:`Relay` (forward to another server), and
:class:`~smtpd_trio.MessageHandler`, a base class that hands your ``on_message`` the parsed
message.

:func:`from_spec` builds one from the CLI's ``--handler`` text (``debugging``, ``sink``,
``maildir:DIR``, ``mbox:PATH``, ``relay:HOST:PORT``), or imports your own as ``module:attr``
(:func:`load_handler`).
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import re
from typing import Any, Final, cast

from smtpd_trio.errors import ConfigError
from smtpd_trio.handler import _SIGNATURES, Handler

from .debugging import Debugging
from .maildir import Maildir
from .mbox import Mbox
from .message import MessageHandler
from .relay import Relay, RelayState
from .sink import Sink

__all__ = [
    "BUILT_IN",
    "Debugging",
    "Maildir",
    "Mbox",
    "MessageHandler",
    "Relay",
    "RelayState",
    "Sink",
    "from_spec",
    "load_handler",
]

#: The names of the built-in handlers in a ``--handler`` spec (the part before any ``:``).
BUILT_IN: Final = frozenset({"debugging", "sink", "maildir", "mbox", "relay"})
_CHOICES: Final = "debugging, sink, maildir:DIR, mbox:PATH, relay:HOST:PORT or module:attr"
_DOTTED: Final = re.compile(r"[^\W\d]\w*(?:\.[^\W\d]\w*)*")
_RELAY: Final = re.compile(
    r"(?:\[(?P<ipv6>[^\]]*)\]|(?P<host>[^:\[\]]*)):(?P<port>[^:]*)(?::(?P<option>.*))?"
)
_RELAY_USAGE: Final = (
    "relay needs HOST:PORT (an IPv6 address in brackets), optionally followed by :no-verify: "
    "--handler relay:HOST:PORT"
)


def from_spec(spec: str) -> Handler[Any]:
    """A handler for the CLI's ``--handler`` text; ConfigError (naming what is wrong) for an
    unknown or malformed one. The built-in names are ``debugging``, ``sink``, ``maildir:DIR``,
    ``mbox:PATH`` and ``relay:HOST:PORT[:no-verify]``; anything else of the form
    ``module:attr`` is imported with :func:`load_handler`. Maildir and Mbox raise OSError if
    their directory or file cannot be used."""
    name, sep, arg = spec.partition(":")
    if name in ("debugging", "sink"):
        if sep:
            raise ConfigError(f"{name} takes no argument: --handler {name}")
        return Debugging() if name == "debugging" else Sink()
    if name == "maildir":
        if not arg:
            raise ConfigError("maildir needs a directory: --handler maildir:DIR")
        return Maildir(arg)
    if name == "mbox":
        if not arg:
            raise ConfigError("mbox needs a file: --handler mbox:PATH")
        return Mbox(arg)
    if name == "relay":
        return _relay(arg)
    if sep and _DOTTED.fullmatch(name):
        return load_handler(spec)
    raise ConfigError(f"unknown handler {spec!r}: choose {_CHOICES}")


def _relay(arg: str) -> Relay:
    if not arg.startswith("[") and arg.count(":") > 2:
        raise ConfigError(
            f"relay: write an IPv6 address in brackets, as in relay:[::1]:25, not 'relay:{arg}'"
        )
    m = _RELAY.fullmatch(arg)
    if m is None:
        raise ConfigError(f"{_RELAY_USAGE}, not 'relay:{arg}'")
    host = m.group("ipv6") if m.group("ipv6") is not None else m.group("host")
    port, option = m.group("port"), m.group("option")
    if not host or not host.strip() or host != host.strip():
        raise ConfigError(f"{_RELAY_USAGE}: no host in 'relay:{arg}'")
    if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise ConfigError(f"relay: the port must be a number within 1-65535, not {port!r}")
    if option not in (None, "no-verify"):
        raise ConfigError(f"relay: unknown option {option!r} (the only one is no-verify)")
    return Relay(host, int(port), verify_tls=option is None)


def _is_handler(obj: object) -> bool:
    """A Handler, or an object with at least one of the callbacks the server calls."""
    if isinstance(obj, Handler):
        return True
    return any(callable(getattr(obj, name, None)) for name in _SIGNATURES)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def load_handler(target: str) -> Handler[Any]:
    """Import ``module:attr`` (``attr`` may be dotted: ``module:Outer.inner``) and make a
    handler of it: a class is instantiated with no arguments, a factory function is called
    with none, and an instance is used as it is. Raises ConfigError, in one line naming
    ``target``, if the module cannot be imported, the attribute is missing, or the object
    is (or gives) no handler. The module is looked for on ``sys.path`` as it is."""
    module_name, _, attr_path = target.partition(":")
    if not _DOTTED.fullmatch(module_name) or not _DOTTED.fullmatch(attr_path):
        raise ConfigError(f"{target!r} is not module:attr (as in mypackage.handlers:MyHandler)")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name + ".").startswith(exc.name + "."):
            raise ConfigError(
                f"cannot import {module_name!r} for {target!r}: no module named {exc.name!r}"
            ) from None
        raise ConfigError(
            f"cannot import {module_name!r} for {target!r}: {_one_line(exc)}"
        ) from None
    except Exception as exc:
        raise ConfigError(
            f"cannot import {module_name!r} for {target!r}: {_one_line(exc)}"
        ) from None
    obj: object = module
    done: list[str] = []
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            where = ".".join([module_name, *done])
            names = [n for n in dir(obj) if not n.startswith("_")]
            close = difflib.get_close_matches(part, names, n=1)
            hint = f" (did you mean {'.'.join([*done, close[0]])!r}?)" if close else ""
            raise ConfigError(f"{where!r} has no attribute {part!r}{hint}")
        obj = getattr(obj, part)
        done.append(part)
    return _make_handler(target, obj)


def _make_handler(target: str, obj: object) -> Handler[Any]:
    if isinstance(obj, type) or (not _is_handler(obj) and callable(obj)):
        kind = "class" if isinstance(obj, type) else "factory"
        if inspect.iscoroutinefunction(obj):
            raise ConfigError(
                f"{target!r} is an async function: a factory must be a plain function that "
                "returns the handler"
            )
        try:
            made = obj()
        except Exception as exc:
            raise ConfigError(
                f"{target!r}: creating the handler failed ({kind} called with no arguments): "
                f"{_one_line(exc)}"
            ) from None
        if not _is_handler(made):
            raise ConfigError(
                f"{target!r}: the {kind} gave {type(made).__name__}, not a handler (no "
                "callback such as on_data; subclass smtpd_trio.Handler)"
            )
        return cast(Handler[Any], made)
    if not _is_handler(obj):
        raise ConfigError(
            f"{target!r} is {type(obj).__name__}, not a handler class, factory or instance"
        )
    return cast(Handler[Any], obj)
