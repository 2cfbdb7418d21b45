"""Small helpers for the sentences hhpulse prints (no imports: every stage may use them)."""

from __future__ import annotations


def plural(n: int, noun: str, many: str | None = None) -> str:
    """``1 run``, ``2 runs``, ``0 runs``; ``many`` for an irregular plural (``1 vacancy``, ``3 vacancies``)."""
    return f"{n} {noun if n == 1 else (many or noun + 's')}"
