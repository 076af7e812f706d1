"""Sink: accepts every message and throws it away (for load tests and benchmarks)."""

from __future__ import annotations

from typing import final


@final
class Sink:
    """Accepts everything, stores nothing. It defines no callbacks, so it costs nothing."""
