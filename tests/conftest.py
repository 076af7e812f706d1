"""Fixtures shared by the whole suite."""

from __future__ import annotations

import ssl

import pytest
import trustme

# For tests that run pytest itself (the plugin's, in tests/test_pytest_plugin.py). The
# smtpd_trio plugin is not named here: installing the package registers it (entry point).
pytest_plugins = ["pytester"]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    """A throwaway certificate authority."""
    return trustme.CA()


@pytest.fixture(scope="module")
def server_cert(ca: trustme.CA) -> trustme.LeafCert:
    return ca.issue_cert("mx.test", "localhost", "127.0.0.1")


@pytest.fixture
def server_ctx(server_cert: trustme.LeafCert) -> ssl.SSLContext:
    """A server context with ``server_cert`` loaded, as a user would build it."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_cert.configure_cert(context)
    return context


@pytest.fixture
def client_ctx(ca: trustme.CA) -> ssl.SSLContext:
    """A client context that trusts ``ca`` (and verifies host names)."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context
