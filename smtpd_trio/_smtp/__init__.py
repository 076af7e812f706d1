"""The sans-IO SMTP core: bytes in, events out; replies in, bytes out.

Nothing in this package performs I/O or imports trio (a ruff rule enforces it). The Trio layer
(:mod:`smtpd_trio.session`) reads from a stream, feeds :class:`~.machine.SMTPMachine`, awaits the
handler for each event that needs a decision, and writes what the machine has queued.
"""
