"""Sink: accepts every message and throws it away (for load tests and benchmarks)."""

from __future__ import annotations

from typing import final

from smtpd_trio.handler import Handler


@final
class Sink(Handler):
    """Accepts everything, stores nothing. It defines no callbacks, so it costs nothing."""
