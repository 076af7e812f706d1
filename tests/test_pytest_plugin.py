"""The pytest plugin: registered by the entry point, its fixtures in Trio tests here, and
whole pytest runs in a subprocess (the plugin as an installed package gives it)."""

from __future__ import annotations

import smtplib
import textwrap
from collections.abc import Mapping

import pytest
import trio

import smtpd_trio.pytest_plugin
from smtpd_trio import Config, Envelope, Handler, Reject, Reply, Session
from smtpd_trio.pytest_plugin import LiveServer
from smtpd_trio.testing import Collector, TestClient

MESSAGE = b"From: a@example.com\r\nSubject: Hello\r\n\r\nHi.\r\n"


def test_registered_once_by_the_entry_point(request: pytest.FixtureRequest) -> None:
    manager = request.config.pluginmanager
    assert manager.get_plugin("smtpd_trio") is smtpd_trio.pytest_plugin
    names = [
        name for name, plugin in manager.list_name_plugin() if plugin is smtpd_trio.pytest_plugin
    ]
    assert names == ["smtpd_trio"]
    dists = [dist.project_name for _, dist in manager.list_plugin_distinfo()]
    assert "smtpd-trio" in dists


# ---------------------------------------------------------------------------------------------
# smtpd_session in Trio tests
# ---------------------------------------------------------------------------------------------


async def test_session_with_the_default_collector(
    smtpd_session: TestClient, smtpd_collector: Collector
) -> None:
    assert (await smtpd_session.ehlo()).code == 250
    reply = await smtpd_session.sendmail("a@example.com", ["b@example.org"], MESSAGE)
    assert (reply.code, reply.enhanced) == (250, "2.0.0")
    message = smtpd_collector.assert_one_message(to="b@example.org", subject="Hello")
    assert message.content == MESSAGE
    assert "by mx.test (smtpd-trio)" in message.received_header
    assert smtpd_session.session.helo_name == "client.test"


class LocalOnly(Handler):
    async def on_rcpt(
        self, session: Session, envelope: Envelope, address: str, params: Mapping[str, str | None]
    ) -> Reply | None:
        if not address.endswith("@example.org"):
            raise Reject(550, "5.1.1", "No such user here")
        return None


@pytest.mark.smtpd(handler=LocalOnly, config=Config(hostname="mx.example.org"))
async def test_session_with_the_marker(smtpd_session: TestClient) -> None:
    reply = await smtpd_session.ehlo()
    assert reply.lines[0] == "mx.example.org"
    await smtpd_session.command("MAIL FROM:<a@example.com>")
    reply = await smtpd_session.command("RCPT TO:<x@elsewhere.test>")
    assert (reply.code, reply.text) == (550, "5.1.1 No such user here")


@pytest.mark.smtpd(config=Config(hostname="mx.test", command_timeout=30))
async def test_session_on_the_autojump_clock(
    smtpd_session: TestClient, autojump_clock: trio.testing.MockClock
) -> None:
    start = trio.current_time()
    reply = await smtpd_session.read_reply()  # we say nothing: the server gives up
    assert (reply.code, reply.enhanced) == (421, "4.4.2")
    assert 30 <= trio.current_time() - start <= 31  # the timer may be up to a second late


class TestOverridingTheHandlerFixture:
    @pytest.fixture
    def smtpd_handler(self) -> Handler:
        return LocalOnly()

    async def test_the_override_is_served(self, smtpd_session: TestClient) -> None:
        await smtpd_session.ehlo()
        await smtpd_session.command("MAIL FROM:<a@example.com>")
        assert (await smtpd_session.command("RCPT TO:<x@elsewhere.test>")).code == 550
        assert (await smtpd_session.command("RCPT TO:<b@example.org>")).code == 250


def test_bad_marker_arguments_are_errors(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.smtpd(hostname="mx.test")
        def test_unknown(smtpd_config):
            pass

        @pytest.mark.smtpd(config="mx.test")
        def test_not_a_config(smtpd_config):
            pass
        """
    )
    result = pytester.runpytest_inprocess("-p", "no:trio")
    result.assert_outcomes(errors=2)
    output = result.stdout.str()
    assert "TypeError: @pytest.mark.smtpd got unknown argument(s): ['hostname']" in output
    assert "TypeError: @pytest.mark.smtpd(config=...) needs a Config, not 'mx.test'" in output


# ---------------------------------------------------------------------------------------------
# Waiting from Trio for a server in a thread, and in the same run
# ---------------------------------------------------------------------------------------------


async def test_wait_async_for_a_server_in_a_thread(smtpd_server: LiveServer) -> None:
    def send() -> None:
        with smtplib.SMTP(smtpd_server.host, smtpd_server.port, timeout=10) as smtp:
            smtp.sendmail("a@example.com", ["b@example.org"], MESSAGE)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.to_thread.run_sync, send)
        [message] = await smtpd_server.collector.wait_async(1)
    assert message.content == MESSAGE


async def test_wait_async_for_a_session_in_this_run(smtpd_collector: Collector) -> None:
    from smtpd_trio.testing import open_test_session

    async def client() -> None:
        async with open_test_session(smtpd_collector) as session:
            await session.ehlo()
            await session.sendmail("a@example.com", ["b@example.org"], MESSAGE)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(client)
        assert len(await smtpd_collector.wait_async(1)) == 1


async def test_wait_async_times_out(
    smtpd_collector: Collector, autojump_clock: trio.testing.MockClock
) -> None:
    with pytest.raises(TimeoutError, match=r"waited 10 s for 1 message\(s\); 0 arrived"):
        await smtpd_collector.wait_async()
    with pytest.raises(RuntimeError, match="would block Trio"):
        smtpd_collector.wait()


# ---------------------------------------------------------------------------------------------
# Whole pytest runs in a subprocess: the plugin as an installed package gives it
# ---------------------------------------------------------------------------------------------

SYNC_TESTS = """
    import smtplib


    def send_welcome(host, port, to):  # the code under test, say
        with smtplib.SMTP(host, port) as smtp:
            smtp.sendmail(
                "shop@example.com", [to], b"Subject: Welcome\\r\\n\\r\\nHello!\\r\\n"
            )


    def test_welcome_mail(smtpd_server):
        send_welcome(smtpd_server.host, smtpd_server.port, "ann@example.org")
        smtpd_server.collector.assert_one_message(to="ann@example.org", subject="Welcome")


    def test_fresh_for_each_test(smtpd_server, smtpd_collector):
        assert smtpd_server.messages == smtpd_collector.messages == []
"""


def test_sync_fixtures_need_no_pytest_trio(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_welcome=SYNC_TESTS)
    pytester.makeini("[pytest]\naddopts = --strict-markers\n")
    result = pytester.runpytest_subprocess("-p", "no:trio", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    # Loaded from the installed distribution, under its entry point's name.
    plugins = [line for line in result.outlines if line.startswith("plugins:")]
    assert len(plugins) == 1
    assert "smtpd-trio-" in plugins[0]
    assert "trio-" not in plugins[0].replace("smtpd-trio-", "")


def test_the_plugin_can_be_turned_off(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_welcome=SYNC_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:smtpd_trio", "-p", "no:trio")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(["*fixture 'smtpd_server' not found*"])


def test_loaded_by_name_without_autoload(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_welcome=SYNC_TESTS)
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    result = pytester.runpytest_subprocess("-p", "smtpd_trio", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_trio_fixtures_with_overrides_in_conftest_and_module(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\ntrio_mode = true\naddopts = --strict-markers\n")
    pytester.makeconftest(
        """
        import pytest
        from smtpd_trio import Handler, Reject


        class NoStrangers(Handler):
            async def on_mail(self, session, address, params):
                if not address.endswith("@example.com"):
                    raise Reject(550, "5.7.1", "Not from you")


        @pytest.fixture
        def smtpd_handler():
            return NoStrangers()
        """
    )
    pytester.makepyfile(
        test_session=textwrap.dedent(
            """
            import pytest
            from smtpd_trio import Config


            @pytest.fixture
            def smtpd_config():
                return Config(hostname="mx.example.net")


            async def test_override(smtpd_session):
                assert (await smtpd_session.ehlo()).lines[0] == "mx.example.net"
                assert (await smtpd_session.command("MAIL FROM:<x@spam.test>")).code == 550
            """
        )
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
