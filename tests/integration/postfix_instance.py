"""A private, throwaway Postfix instance on loopback, for tests that need a real MTA as a client.

Everything lives in one temporary directory: ``etc/`` (the ``config_directory``: main.cf and
master.cf written here), ``spool/`` (``queue_directory``), ``data/`` and ``maillog`` (Postfix
logs to a file, no syslog). Its smtpd listens on 127.0.0.1 only, every service runs without a
chroot, and nothing is delivered anywhere but the transports the test names
(``transport_maps``); everything else, bounces included, is discarded. It is started with
``postfix -c DIR start`` and stopped with ``postfix -c DIR stop``, so it needs root; the
system's own Postfix (configured or not, running or not) is never touched.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final

import attrs
import pytest
import trio

from .conftest import find_program
from .proxy_fixtures import free_port

#: How long Postfix may take to start, stop, or deliver what a test sent it.
DEADLINE: Final = 30.0

_MASTER_CF: Final = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n - n 60  1 pickup
cleanup   unix  n - n -   0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n -   - trivial-rewrite
bounce    unix  - - n -   0 bounce
defer     unix  - - n -   0 bounce
trace     unix  - - n -   0 bounce
verify    unix  - - n -   1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n -   - proxymap
showq     unix  n - n -   - showq
error     unix  - - n -   - error
retry     unix  - - n -   - error
discard   unix  - - n -   - discard
lmtp      unix  - - n -   - lmtp
smtp      unix  - - n -   - smtp
anvil     unix  - - n -   1 anvil
scache    unix  - - n -   1 scache
postlog   unix-dgram n - n - 1 postlogd
"""

_STATUS: Final = re.compile(
    r" postfix/(?:lmtp|smtp)\[\d+\]: \w+: to=<([^>]*)>, (.*?) status=(\w+) \((.*)\)$"
)


@attrs.frozen
class Status:
    """What Postfix's lmtp or smtp client logged for one recipient."""

    recipient: str
    #: ``sent``, ``deferred`` or ``bounced``.
    status: str
    #: The log line's details (relay, delays, dsn).
    details: str
    #: Postfix's explanation: the server's reply, "(in reply to ...)".
    reason: str


class PostfixInstance:
    def __init__(self, root: Path, smtp_port: int) -> None:
        self.root = root
        self.etc = root / "etc"
        self.maillog = root / "maillog"
        #: Where its smtpd listens (on 127.0.0.1), to inject mail by SMTP.
        self.smtp_port = smtp_port

    async def postfix(self, *args: str) -> None:
        """``postfix -c DIR ARGS``; on failure, fail the test with the maillog."""
        done = await trio.run_process(
            [_program("postfix"), "-c", str(self.etc), *args],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        if done.returncode != 0:
            pytest.fail(f"postfix {' '.join(args)} failed ({done.returncode}):\n{self.log()}")

    async def sendmail(self, sender: str, recipients: list[str], message: bytes) -> None:
        """Submit ``message`` with Postfix's sendmail (postdrop, pickup, cleanup, qmgr)."""
        done = await trio.run_process(
            [_program("sendmail"), "-C", str(self.etc), "-f", sender, "--", *recipients],
            stdin=message,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr.decode("utf-8", "replace")

    def log(self) -> str:
        try:
            return self.maillog.read_text("utf-8", "replace")
        except FileNotFoundError:
            return "(no maillog)"

    def statuses(self) -> list[Status]:
        """Every delivery attempt the lmtp and smtp clients logged so far, in order."""
        found = []
        for line in self.log().splitlines():
            m = _STATUS.search(line)
            if m:
                found.append(Status(m.group(1), m.group(3), m.group(2), m.group(4)))
        return found

    async def wait_for_statuses(self, count: int) -> list[Status]:
        """The first ``count`` delivery attempts, once they are all logged."""
        with trio.move_on_after(DEADLINE):
            while True:
                found = self.statuses()
                if len(found) >= count:
                    return found[:count]
                await trio.sleep(0.05)  # Postfix tells us only through its log
        pytest.fail(f"Postfix logged fewer than {count} deliveries:\n{self.log()}")

    async def wait_for_log(self, text: str) -> str:
        """The log, once ``text`` is in it."""
        with trio.move_on_after(DEADLINE):
            while True:
                log = self.log()
                if text in log:
                    return log
                await trio.sleep(0.05)  # Postfix tells us only through its log
        pytest.fail(f"Postfix did not log {text!r}:\n{self.log()}")


def _program(name: str) -> str:
    path = find_program(name)
    assert path is not None
    return path


def require_postfix() -> pwd.struct_passwd:
    """Skip unless a private Postfix can be started here: root, postfix installed."""
    for name in ("postfix", "sendmail"):
        if find_program(name) is None:
            pytest.skip(f"{name} is not installed (Debian package: postfix; .ci/run installs it)")
    if os.geteuid() != 0:
        pytest.skip("starting a private Postfix instance (postfix -c DIR start) needs root")
    try:
        return pwd.getpwnam("postfix")
    except KeyError:
        pytest.skip("there is no postfix user (the postfix package creates it)")


@asynccontextmanager
async def running_postfix(
    transports: Mapping[str, str], settings: Sequence[str] = ()
) -> AsyncIterator[PostfixInstance]:
    """A private Postfix on loopback relaying each domain of ``transports`` to its Postfix
    transport (``lmtp:inet:127.0.0.1:PORT``, ``lmtp:unix:/path``,
    ``smtp:[127.0.0.1]:PORT``), and discarding the rest; ``settings`` are more main.cf
    lines."""
    owner = require_postfix()
    root = Path(tempfile.mkdtemp(prefix="pf-"))
    os.chmod(root, 0o755)  # Postfix's daemons (user postfix) find their queue under it
    instance = PostfixInstance(root, free_port("127.0.0.1"))
    for name in ("etc", "spool"):
        (root / name).mkdir()
    (root / "data").mkdir()
    os.chown(root / "data", owner.pw_uid, owner.pw_gid)
    transport_map = ", ".join(f"{domain}={where}" for domain, where in transports.items())
    (instance.etc / "main.cf").write_text(
        "\n".join(
            [
                "compatibility_level = 3.6",
                f"queue_directory = {root}/spool",
                f"data_directory = {root}/data",
                f"maillog_file = {instance.maillog}",
                f"maillog_file_prefixes = {root}",
                "mail_owner = postfix",
                "setgid_group = postdrop",
                "inet_interfaces = loopback-only",
                "inet_protocols = ipv4",
                "myhostname = mta.postfix.test",
                "mydomain = postfix.test",
                "myorigin = $myhostname",
                "mydestination =",
                "local_recipient_maps =",
                "alias_maps =",
                "alias_database =",
                f"relay_domains = {', '.join(transports)}",
                f"transport_maps = inline:{{ {transport_map} }}",
                "default_transport = discard:not a test destination",
                "mynetworks = 127.0.0.0/8",
                "smtpd_relay_restrictions = permit_mynetworks, reject",
                "biff = no",
                "lmtp_connection_cache_on_demand = no",
                "smtp_connection_cache_on_demand = no",
                *settings,
                "",
            ]
        )
    )
    (instance.etc / "master.cf").write_text(_MASTER_CF.format(port=instance.smtp_port))
    started = False
    try:
        with trio.fail_after(DEADLINE):
            await instance.postfix("start")
            started = True
        yield instance
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(DEADLINE):
            if started:
                await trio.run_process(
                    [_program("postfix"), "-c", str(instance.etc), "stop"],
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                )
        shutil.rmtree(root, ignore_errors=True)
