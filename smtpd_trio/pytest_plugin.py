"""pytest fixtures for testing with smtpd-trio; installing the package registers them (the
``pytest11`` entry point ``smtpd_trio``; ``-p no:smtpd_trio`` turns them off).

Fixtures (each new for every test):

- ``smtpd_collector``: a :class:`~smtpd_trio.testing.Collector`, the default handler;
- ``smtpd_handler``: the handler the two below serve (the collector, unless a
  ``@pytest.mark.smtpd(handler=...)`` marker or your own ``smtpd_handler`` fixture says
  otherwise);
- ``smtpd_config``: their :class:`~smtpd_trio.Config` (``hostname="mx.test"``, a five-second
  ``shutdown_timeout``; the marker's ``config=`` or your own fixture otherwise);
- ``smtpd_server``: a real server on a free loopback port, in a thread (no pytest-trio needed):
  a :class:`LiveServer` with ``host``, ``port`` and the ``messages`` collected;
- ``smtpd_session``: an in-memory session and its :class:`~smtpd_trio.testing.TestClient`,
  greeting read, for Trio tests (needs pytest-trio).

Nothing of smtpd-trio is imported until a fixture is used, so the plugin costs nothing in test
suites that do not use it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any, final

import pytest

if TYPE_CHECKING:
    from .config import Config
    from .handler import Handler, Message
    from .testing import Collector, TestClient
    from .thread import ServerThread

__all__ = ["LiveServer"]

#: The marker that picks the handler and the config of a test (or a module, or a class).
MARKER = "smtpd"

#: How long tearing down ``smtpd_server`` lets open transactions finish, by default.
SHUTDOWN_TIMEOUT = 5.0


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(handler=None, config=None): the handler (an object, or a class to "
        "instantiate for each test) and the smtpd_trio.Config that the smtpd_server and "
        "smtpd_session fixtures serve.",
    )


@final
class LiveServer:
    """What the ``smtpd_server`` fixture gives: a running server and what it received."""

    def __init__(self, thread: ServerThread, collector: Collector | None) -> None:
        #: The :class:`~smtpd_trio.ServerThread` (for ``stop()``, ``start()``,
        #: ``trio_token``, ``handler``).
        self.thread = thread
        self._collector = collector

    def __repr__(self) -> str:
        return f"<LiveServer {self.host}:{self.port} {self.thread.handler!r}>"

    @property
    def host(self) -> str:
        """The address to connect to (``127.0.0.1``)."""
        return self.thread.host

    @property
    def port(self) -> int:
        return self.thread.port

    @property
    def collector(self) -> Collector:
        """The handler, when it is a :class:`~smtpd_trio.testing.Collector` (the default
        one, or yours): waits and assertion helpers."""
        if self._collector is None:
            raise RuntimeError(
                f"the handler, {type(self.thread.handler).__name__}, is not a Collector: "
                "look at your handler's own records, or subclass smtpd_trio.testing.Collector"
            )
        return self._collector

    @property
    def messages(self) -> list[Message]:
        """The messages the server accepted so far (see :attr:`collector`)."""
        return self.collector.messages


def _marker_value(request: pytest.FixtureRequest, name: str) -> Any:
    marker = request.node.get_closest_marker(MARKER)
    if marker is None:
        return None
    if marker.args:
        raise TypeError(f"@pytest.mark.{MARKER} takes keyword arguments: handler=, config=")
    unknown = set(marker.kwargs) - {"handler", "config"}
    if unknown:
        raise TypeError(f"@pytest.mark.{MARKER} got unknown argument(s): {sorted(unknown)}")
    return marker.kwargs.get(name)


@pytest.fixture
def smtpd_collector() -> Collector:
    """A new :class:`~smtpd_trio.testing.Collector`: the default ``smtpd_handler``."""
    from .testing import Collector

    return Collector()


@pytest.fixture
def smtpd_handler(request: pytest.FixtureRequest, smtpd_collector: Collector) -> Handler[Any]:
    """The handler ``smtpd_server`` and ``smtpd_session`` serve: the marker's ``handler=``
    (a class is instantiated for each test), else ``smtpd_collector``. Override this fixture
    to build your handler yourself."""
    handler = _marker_value(request, "handler")
    if handler is None:
        return smtpd_collector
    if isinstance(handler, type):
        return handler()  # type: ignore[no-any-return]
    return handler  # type: ignore[no-any-return]


@pytest.fixture
def smtpd_config(request: pytest.FixtureRequest) -> Config:
    """The :class:`~smtpd_trio.Config` ``smtpd_server`` and ``smtpd_session`` use: the
    marker's ``config=``, else ``Config(hostname="mx.test", shutdown_timeout=5.0)``.
    Override this fixture to build it yourself."""
    from .config import Config

    config = _marker_value(request, "config")
    if config is None:
        return Config(hostname="mx.test", shutdown_timeout=SHUTDOWN_TIMEOUT)
    if not isinstance(config, Config):
        raise TypeError(f"@pytest.mark.{MARKER}(config=...) needs a Config, not {config!r}")
    return config


@pytest.fixture
def smtpd_server(smtpd_handler: Handler[Any], smtpd_config: Config) -> Iterator[LiveServer]:
    """A real server for ``smtpd_handler`` on a free port of 127.0.0.1, in a thread: for
    synchronous code under test (``EMAIL_HOST``/``EMAIL_PORT`` in Django). Stopped gracefully
    after the test; an error of the server thread fails the test."""
    from .testing import Collector
    from .thread import ServerThread

    collector = smtpd_handler if isinstance(smtpd_handler, Collector) else None
    with ServerThread(smtpd_handler, config=smtpd_config) as thread:
        yield LiveServer(thread, collector)


@pytest.fixture
async def smtpd_session(
    smtpd_handler: Handler[Any], smtpd_config: Config
) -> AsyncIterator[TestClient]:
    """An in-memory session for ``smtpd_handler`` (see
    :func:`~smtpd_trio.testing.open_test_session`), greeting read: its client. For Trio
    tests (pytest-trio)."""
    from .testing import open_test_session

    async with open_test_session(smtpd_handler, config=smtpd_config) as client:
        yield client
