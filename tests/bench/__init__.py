"""The benchmarks (`just bench`, `just profile`), and what their tables share."""

from __future__ import annotations

import statistics


def spread(values: list[float], form: str = "{:.2f}") -> str:
    """The median of several runs, and their range."""
    if len(values) == 1:
        return form.format(values[0])
    return f"{form.format(statistics.median(values))} ({form.format(min(values))} to {form.format(max(values))})"
