"""Run the Python examples of README.md and docs/*.md as a reader would, and check what they do.

``tests/test_docs.py`` drives this module; it is the whole convention for writing examples:

- **Every** ````python`` block of a page runs, in page order, in one namespace per page (a page
  is a module), so a block may use what an earlier block of the same page defined. What a block
  prints and what the ``smtpd_trio`` loggers say at ERROR are recorded; an ERROR fails it.
- **``trio.run(...)`` really runs the program** (and so does ``smtpd_trio.run(...)``), with a
  few things redirected so that nothing depends on this machine: every listener the program
  opens (``serve_smtp``, ``open_smtp_listeners``, ``smtpd_trio.run``) is bound to 127.0.0.1 on
  a free port, whatever address and port the example names (the requested ones are recorded);
  a certificate, key or CA file the example names that does not exist here is replaced by a
  throwaway one. Once the program is serving, a real SMTP client connects to each server over
  TCP and holds a short conversation (or checks that a PROXY listener refuses it, when
  127.0.0.1 is not a trusted proxy). Then the program is stopped: with SIGTERM if it listens
  for SIGTERM (it must then finish by itself: a graceful shutdown), otherwise by cancelling
  it. A program that returns by itself is fine too. A ``ServerThread``'s own ``trio.run``, in
  its thread, is left alone (but its listeners too are on a free port of 127.0.0.1).
- **``async def test_*`` functions** a block defines are run as pytest-trio would run them. The
  only fixture on offer is ``autojump_clock`` (a ``trio.testing.MockClock`` that jumps ahead
  whenever every task is waiting); asking for any other fails, as it would for a reader.
- **Every ``Handler`` subclass** a block defines whose constructor needs no arguments is driven
  through :func:`smtpd_trio.testing.open_test_session` with the same conversation, on a mock
  clock; it must never fail (no ``451 4.3.0``, no ERROR). Handlers that need arguments are
  driven by the page's own tests in ``tests/test_docs.py``, which checks that none is left out.
- An HTML comment on the line before a block changes what happens to it:

  - ``<!-- doc-test: signature NAME -->``: the block shows the signature of ``NAME`` (a dotted
    name such as ``smtpd_trio.serve_smtp``); it is defined with lazy annotations, and its
    parameters (names, kinds, defaults) must be those of the real ``NAME``.
  - ``<!-- doc-test: skip REASON -->``: the block is not run. Keep these rare, and say why.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import io
import logging
import re
import signal
import ssl
import sys
import threading
import types
from collections.abc import Awaitable, Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Final, TypeGuard, TypeVar

import attrs
import pytest
import trio
import trio.testing
import trustme
from server_log import kept_records

import smtpd_trio
import smtpd_trio.runner
import smtpd_trio.server
import smtpd_trio.thread
from smtpd_trio import Handler, SMTPServer, listener_port
from smtpd_trio.config import UntrustedPeers
from smtpd_trio.testing import ClientReply, TestClient, dot_stuff, open_test_session

ROOT: Final = Path(__file__).resolve().parent.parent
T = TypeVar("T")

_spec = importlib.util.spec_from_file_location("check_docs", ROOT / "docs" / "check_docs.py")
assert _spec is not None
assert _spec.loader is not None
_check_docs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_check_docs)
#: The fence parser docs/check_docs.py uses: (blocks with .info, .line, .text; prose lines).
split_markdown: Callable[[str], tuple[list[Any], list[tuple[int, str]]]] = (
    _check_docs.split_markdown
)

_DIRECTIVE: Final = re.compile(r"^\s*<!--\s*doc-test:\s*(?P<kind>[\w-]+)\s*(?P<arg>.*?)\s*-->\s*$")
_PYTHON: Final = frozenset({"python", "py", "python3"})
#: What the conversation sends as a message.
MESSAGE: Final = b"Subject: a test from the docs\r\n\r\nHello from the documentation.\r\n"
SENDER: Final = "sender@example.com"
RECIPIENT: Final = "postmaster@example.org"
#: Real seconds a program may take to start serving, or to finish after SIGTERM.
PROGRAM_DEADLINE: Final = 10.0


def markdown_pages() -> list[Path]:
    """README.md and every page in docs/ (not the generated ones under docs/reference/)."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def page_name(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


@attrs.frozen
class Block:
    """One fenced code block of a page."""

    path: Path
    #: The line of its first line of code (1-based).
    line: int
    language: str
    text: str
    #: ``(kind, argument)`` of a ``<!-- doc-test: kind argument -->`` comment just before it.
    directive: tuple[str, str] | None

    @property
    def where(self) -> str:
        return f"{page_name(self.path)}:{self.line}"

    @property
    def end(self) -> int:
        return self.line + self.text.count("\n")


def blocks_of(path: Path, languages: frozenset[str] | None = None) -> list[Block]:
    """The fenced blocks of a page (only those in ``languages``, when given)."""
    found, prose = split_markdown(path.read_text(encoding="utf-8"))
    text_of = dict(prose)
    out: list[Block] = []
    for raw in found:
        language = raw.info.split(maxsplit=1)[0].lower() if raw.info else ""
        if languages is not None and language not in languages:
            continue
        directive = None
        number = raw.line - 2  # the line before the opening fence
        while number > 0 and not text_of.get(number, "x").strip():
            number -= 1
        m = _DIRECTIVE.match(text_of.get(number, ""))
        if m:
            directive = (m.group("kind"), m.group("arg"))
        out.append(Block(path, raw.line, language, raw.text, directive))
    return out


# ---- what happened ---------------------------------------------------------------------------


@attrs.define
class Conversation:
    """The replies of one conversation: ``("greeting" | "EHLO" | "MAIL" | ..., reply)``."""

    replies: list[tuple[str, ClientReply]] = attrs.Factory(list)
    #: The server closed the connection without sending anything.
    refused_silently: bool = False

    def reply(self, step: str) -> ClientReply:
        for name, reply in self.replies:
            if name == step:
                return reply
        raise KeyError(f"no {step} in {self}")

    def __str__(self) -> str:
        if self.refused_silently:
            return "closed without a word"
        return "; ".join(f"{name}: {reply}" for name, reply in self.replies)


@attrs.define
class Visit:
    """A server a program started, what it was asked for and how it answered."""

    server: SMTPServer
    #: ``(port, host)`` the program asked ``open_smtp_listeners`` for, if it went through it.
    requested: list[tuple[int, object]]
    port: int
    conversation: Conversation


@attrs.define
class ProgramRun:
    """One ``trio.run`` call of a block."""

    visits: list[Visit] = attrs.Factory(list)
    #: "returned" (by itself), "signal" (finished after SIGTERM) or "cancelled".
    ended: str = ""
    result: object = None


@attrs.define
class BlockRun:
    """What running one block did."""

    block: Block
    output: str = ""
    programs: list[ProgramRun] = attrs.Factory(list)
    tests_run: list[str] = attrs.Factory(list)
    #: Handler classes driven by the generic conversation, and how it went.
    driven: dict[str, Conversation] = attrs.Factory(dict)
    #: Files the block named that do not exist here, replaced by throwaway ones.
    replaced_files: list[str] = attrs.Factory(list)
    #: Names the block defined or rebound.
    defined: dict[str, object] = attrs.Factory(dict)


def check_no_errors(records: Sequence[logging.LogRecord], where: str) -> None:
    """Fail if the server logged an ERROR (``records`` from :func:`server_log.kept_records`)."""
    if records:
        first = records[0]
        trace = logging.Formatter().formatException(first.exc_info) if first.exc_info else ""
        raise AssertionError(
            f"{where}: the server logged {len(records)} error(s), the first: "
            f"{first.name}: {first.getMessage()}\n{trace}"
        )


# ---- the conversation ------------------------------------------------------------------------


async def converse(client: TestClient, *, greeting_read: ClientReply | None = None) -> Conversation:
    """Greeting, EHLO, one message to ``RECIPIENT`` (as far as the server lets it go), QUIT."""
    talk = Conversation()
    try:
        greeting = greeting_read or await client.read_reply()
    except EOFError:
        talk.refused_silently = True
        return talk
    talk.replies.append(("greeting", greeting))
    if greeting.code == 220:
        ehlo = await client.ehlo()
        talk.replies.append(("EHLO", ehlo))
        steps = [
            ("MAIL", f"MAIL FROM:<{SENDER}>"),
            ("RCPT", f"RCPT TO:<{RECIPIENT}>"),
            ("DATA", "DATA"),
        ]
        ok = ehlo.code == 250
        for name, line in steps:
            if not ok:
                break
            reply = await client.command(line)
            talk.replies.append((name, reply))
            ok = reply.code in (250, 251, 354)
        if ok:
            await client.send(dot_stuff(MESSAGE))
            talk.replies.append(("message", await client.read_reply()))
    if greeting.code != 421:
        talk.replies.append(("QUIT", await client.command("QUIT")))
    assert await client.at_eof(), f"the server did not close after QUIT: {talk}"
    return talk


def check_conversation(talk: Conversation, where: str) -> None:
    """No handler failure and an orderly end."""
    for name, reply in talk.replies:
        if reply.code == 451 or (reply.code == 421 and name != "greeting"):
            raise AssertionError(f"{where}: {name} was answered {reply} ({talk})")
    if not talk.refused_silently and talk.replies[0][1].code != 421:
        assert talk.reply("QUIT").code == 221, f"{where}: {talk}"


# ---- the world a block runs in ---------------------------------------------------------------


class _Relay:
    """A task status that also tells us when a server has started."""

    def __init__(self, inner: trio.TaskStatus[Any], on_started: Callable[[], None]) -> None:
        self._inner = inner
        self._on_started = on_started

    def started(self, value: object = None) -> None:
        self._inner.started(value)
        self._on_started()


class World:
    """The patches in force while a block runs, and what they saw."""

    def __init__(self, run: BlockRun) -> None:
        self.run = run
        self.real_trio_run: Callable[..., Any] = trio.run
        self.requested: list[tuple[int, object]] = []
        self.serving: list[tuple[SMTPServer, Sequence[trio.abc.Listener[Any]]]] = []
        self.signals: set[int] = set()
        self.changed = trio.Event()
        self._ca: trustme.CA | None = None

    @property
    def ca(self) -> trustme.CA:
        if self._ca is None:
            self._ca = trustme.CA()
        return self._ca

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        real_open = smtpd_trio.server.open_smtp_listeners
        real_serve = SMTPServer.serve
        real_receiver = trio.open_signal_receiver
        real_load_cert_chain = ssl.SSLContext.load_cert_chain
        real_load_verify = ssl.SSLContext.load_verify_locations
        world = self

        async def open_smtp_listeners(
            port: int,
            *,
            host: object = "127.0.0.1",
            backlog: int | None = None,
            reuse_port: bool = False,
        ) -> list[trio.SocketListener]:
            if in_main_thread():  # a ServerThread's are not the program's
                world.requested.append((port, host))
            return await real_open(0, host="127.0.0.1", backlog=backlog)

        async def serve(
            server: SMTPServer,
            listeners: Sequence[trio.abc.Listener[Any]],
            *,
            task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
        ) -> None:
            if not in_main_thread():  # a ServerThread's: not the program's
                await real_serve(server, listeners, task_status=task_status)
                return

            def started() -> None:
                world.serving.append((server, listeners))
                world.changed.set()

            await real_serve(server, listeners, task_status=_Relay(task_status, started))

        @contextlib.contextmanager
        def open_signal_receiver(*signals: int) -> Iterator[Any]:
            with real_receiver(*signals) as receiver:
                world.signals.update(signals)
                try:
                    yield receiver
                finally:
                    world.signals.difference_update(signals)

        def load_cert_chain(
            context: ssl.SSLContext,
            certfile: str,
            keyfile: str | None = None,
            password: Any = None,
        ) -> None:
            if Path(certfile).exists():
                real_load_cert_chain(context, certfile, keyfile, password)
                return
            world.run.replaced_files += [certfile] + ([keyfile] if keyfile else [])
            world.ca.issue_cert("mx.example.org", "localhost").configure_cert(context)

        def load_verify_locations(
            context: ssl.SSLContext,
            cafile: str | None = None,
            capath: str | None = None,
            cadata: Any = None,
        ) -> None:
            if cafile is None or Path(cafile).exists():
                real_load_verify(context, cafile, capath, cadata)
                return
            world.run.replaced_files.append(cafile)
            world.ca.configure_trust(context)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(trio, "run", self.run_program)
            patch.setattr(smtpd_trio.server, "open_smtp_listeners", open_smtp_listeners)
            patch.setattr(smtpd_trio, "open_smtp_listeners", open_smtp_listeners)
            patch.setattr(smtpd_trio.runner, "open_smtp_listeners", open_smtp_listeners)
            patch.setattr(smtpd_trio.thread, "open_smtp_listeners", open_smtp_listeners)
            patch.setattr(SMTPServer, "serve", serve)
            patch.setattr(trio, "open_signal_receiver", open_signal_receiver)
            patch.setattr(ssl.SSLContext, "load_cert_chain", load_cert_chain)
            patch.setattr(ssl.SSLContext, "load_verify_locations", load_verify_locations)
            yield

    def run_program(
        self, async_fn: Callable[..., Awaitable[T]], *args: object, **options: Any
    ) -> T:
        """``trio.run`` as the examples see it (in a ServerThread's thread, the real one)."""
        if not in_main_thread():
            return self.real_trio_run(async_fn, *args, **options)  # type: ignore[no-any-return]
        program = ProgramRun()
        self.run.programs.append(program)
        self.requested.clear()
        self.serving.clear()
        result: T = self.real_trio_run(self._drive, program, partial(async_fn, *args), **options)
        return result

    async def _drive(self, program: ProgramRun, main: Callable[[], Awaitable[T]]) -> T | None:
        done = trio.Event()
        results: list[T] = []
        self.changed = trio.Event()

        async def run_main() -> None:
            results.append(await main())
            done.set()
            self.changed.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_main)
            with trio.fail_after(PROGRAM_DEADLINE):
                await self.changed.wait()
            if not done.is_set():
                # Let any other server of the program start too.
                await trio.testing.wait_all_tasks_blocked(0.05)
                for server, listeners in self.serving:
                    program.visits.append(await self._visit(server, listeners))
                # Let the program finish with what it was given (a worker, a queue).
                await trio.testing.wait_all_tasks_blocked(0.05)
                if signal.SIGTERM in self.signals:
                    signal.raise_signal(signal.SIGTERM)
                    with trio.fail_after(PROGRAM_DEADLINE):
                        await done.wait()
                    program.ended = "signal"
                else:
                    program.ended = "cancelled"
                    nursery.cancel_scope.cancel()
            else:
                program.ended = "returned"
        program.result = results[0] if results else None
        return program.result

    async def _visit(
        self, server: SMTPServer, listeners: Sequence[trio.abc.Listener[Any]]
    ) -> Visit:
        port = listener_port(listeners[0])
        config = server.config
        stream: trio.abc.Stream = await trio.open_tcp_stream("127.0.0.1", port)
        if config.implicit_tls:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            stream = trio.SSLStream(stream, context, server_hostname="mx.example.org")
        client = TestClient(stream)
        try:
            with trio.fail_after(PROGRAM_DEADLINE):
                talk = await converse(client)
        finally:
            await client.aclose()
        refused = (
            config.proxy_protocol
            and "127.0.0.1" not in config.trusted_proxies
            and config.untrusted_proxy_peers is UntrustedPeers.REFUSE
        )
        if refused:
            assert talk.refused_silently, f"an untrusted peer was served: {talk}"
        else:
            check_conversation(talk, f"the server on port {port}")
        return Visit(server, list(self.requested), port, talk)


def in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


# ---- pages -----------------------------------------------------------------------------------


class Page:
    """One Markdown page, its blocks run one after the other in one module."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = page_name(path)
        self.module = types.ModuleType("docpage_" + re.sub(r"\W", "_", self.name))
        self.module.__file__ = str(path)
        self.blocks = blocks_of(path, _PYTHON)
        self.runs: list[BlockRun] = []
        self.failed: Block | None = None

    @property
    def namespace(self) -> dict[str, Any]:
        return self.module.__dict__

    def __getitem__(self, name: str) -> Any:
        try:
            return self.namespace[name]
        except KeyError:
            raise KeyError(f"{self.name} defines no {name!r} (was the example changed?)") from None

    def output(self) -> str:
        return "".join(run.output for run in self.runs)

    def run_for(self, line: int) -> BlockRun:
        """What the block starting at (or containing) ``line`` did."""
        for run in self.runs:
            if run.block.line <= line <= run.block.end:
                return run
        raise KeyError(f"no block of {self.name} that ran covers line {line}")

    def run_containing(self, text: str) -> BlockRun:
        """What the one block whose code contains ``text`` did."""
        self.run_all()
        found = [run for run in self.runs if text in run.block.text]
        assert len(found) == 1, f"{len(found)} blocks of {self.name} contain {text!r}"
        return found[0]

    def handler_classes(self) -> dict[str, type[Handler[Any]]]:
        """Every Handler subclass the page's examples define."""
        self.run_all()
        return {
            name: value
            for run in self.runs
            for name, value in run.defined.items()
            if is_doc_handler(value, self.module)
        }

    def run_through(self, index: int) -> BlockRun:
        """Run the blocks up to ``index`` (those not run yet); what block ``index`` did."""
        while len(self.runs) <= index:
            if self.failed is not None:
                pytest.fail(f"an earlier example failed: {self.failed.where}", pytrace=False)
            block = self.blocks[len(self.runs)]
            try:
                self.runs.append(self._run(block))
            except BaseException:
                self.failed = block
                raise
        return self.runs[index]

    def run_all(self) -> Page:
        if self.blocks:
            self.run_through(len(self.blocks) - 1)
        return self

    def _run(self, block: Block) -> BlockRun:
        run = BlockRun(block)
        if block.directive is not None:
            kind, argument = block.directive
            if kind == "skip":
                if not argument:
                    raise ValueError(f"{block.where}: a skip needs a reason")
                return run
            if kind == "signature":
                check_signature(block, argument, self.namespace)
                return run
            raise ValueError(f"{block.where}: unknown doc-test directive {kind!r}")
        sys.modules[self.module.__name__] = self.module
        code = compile(
            "\n" * (block.line - 1) + block.text, str(block.path), "exec", dont_inherit=True
        )
        before = dict(self.namespace)
        out = io.StringIO()
        world = World(run)
        with kept_records("smtpd_trio", logging.ERROR) as errors:
            with contextlib.redirect_stdout(out), world.active():
                exec(code, self.namespace)
            run.defined = {k: v for k, v in self.namespace.items() if before.get(k) is not v}
            check_no_errors(errors, block.where)
            for name, value in run.defined.items():
                if is_doc_handler(value, self.module) and takes_no_arguments(value):
                    with contextlib.redirect_stdout(out):
                        run.driven[name] = drive_generically(value, f"{block.where}: {name}")
                    check_no_errors(errors, f"{block.where}: {name}")
        with contextlib.redirect_stdout(out):
            for name, value in run.defined.items():
                if name.startswith("test") and inspect.isfunction(value):
                    run_test_function(value)
                    run.tests_run.append(name)
        run.output = out.getvalue()
        return run


def is_doc_handler(value: object, module: types.ModuleType) -> TypeGuard[type[Handler[Any]]]:
    return (
        inspect.isclass(value)
        and issubclass(value, Handler)
        and value.__module__ == module.__name__
    )


def takes_no_arguments(cls: type) -> bool:
    try:
        parameters = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):
        return False
    return all(
        p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in parameters
    )


def drive_generically(cls: type[Handler[Any]], where: str) -> Conversation:
    """The conversation with a new ``cls()``, on a mock clock (a handler may sleep)."""

    async def main() -> Conversation:
        async with open_test_session(cls(), read_greeting=False) as client:
            return await converse(client)

    talk: Conversation = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    check_conversation(talk, where)
    return talk


def run_test_function(function: Callable[..., Any]) -> None:
    """Run a test an example defines, as pytest with pytest-trio in Trio mode would."""
    arguments: dict[str, object] = {}
    clock: trio.abc.Clock | None = None
    for name in inspect.signature(function).parameters:
        if name == "autojump_clock":
            clock = arguments[name] = trio.testing.MockClock(autojump_threshold=0)
        else:
            raise AssertionError(
                f"{function.__name__} asks for a fixture {name!r}: pytest would fail with "
                f"\"fixture '{name}' not found\""
            )
    if inspect.iscoroutinefunction(function):
        trio.run(partial(function, **arguments), clock=clock)
    else:
        function(**arguments)


def resolve(dotted: str) -> Any:
    module_name, _, attribute = dotted.rpartition(".")
    return getattr(importlib.import_module(module_name), attribute)


def check_signature(block: Block, dotted: str, namespace: dict[str, Any]) -> None:
    """The block's ``def`` of ``dotted`` has the parameters of the real one."""
    import __future__

    scratch = dict(namespace)
    flags = __future__.annotations.compiler_flag
    code = compile(
        "\n" * (block.line - 1) + block.text, str(block.path), "exec", flags, dont_inherit=True
    )
    exec(code, scratch)
    real = resolve(dotted)
    shown = scratch[dotted.rpartition(".")[2]]
    got = [(p.name, p.kind, p.default) for p in inspect.signature(shown).parameters.values()]
    want = [(p.name, p.kind, p.default) for p in inspect.signature(real).parameters.values()]
    assert got == want, (
        f"{block.where}: the signature shown is not that of {dotted}:\n{got}\n!=\n{want}"
    )
