"""The exceptions smtpd-trio raises.

::

    SMTPDTrioError                  root of everything this package raises on purpose
    ├── ConfigError (ValueError)    a configuration value is invalid (raised when you build it)
    └── ProxyProtocolError          a PROXY protocol header is malformed (smtpd_trio.proxy)

:class:`smtpd_trio.Reject` is not an error: it is how a handler answers with a refusal.
Bad input from the network never escapes a session as an exception: the sans-IO cores turn it
into an SMTP reply or a close, and the Trio layer logs it with the connection id.
"""

from __future__ import annotations


class SMTPDTrioError(Exception):
    """Root of the exceptions raised by smtpd-trio."""


class ConfigError(SMTPDTrioError, ValueError):
    """A configuration value is invalid."""
