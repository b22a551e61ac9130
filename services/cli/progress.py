"""What `introspect run` shows while it runs: start-up steps, then progress in observations
and in generations (a three-step task answers three questions per observation), and each
dead letter with its reason as it happens. On a terminal, a bar; anywhere else (nohup, CI,
a batch scheduler's log), one plain line every few seconds."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from proto import DeadLetter

from ..local import GenerationCounts


class RunProgress:
    def __init__(
        self,
        counts: Callable[[], GenerationCounts] | None = None,
        stream: TextIO | None = None,
        every: float = 5.0,
    ) -> None:
        self.counts = counts
        # sys.stderr as it is now, not as it was when this module was imported (a test's
        # captured stream, closed since, say).
        stream = self.stream = stream or sys.stderr
        self.every = every  # seconds between plain lines
        self.started = time.monotonic()
        self._last_line = 0.0
        self._last_received = -1  # what the last plain line said
        self._last_counts = 0.0
        self._generations: GenerationCounts | None = None
        self._bar: Any = None
        if stream.isatty():
            from tqdm import tqdm

            self._bar = tqdm(unit="obs", file=stream)

    def step(self, text: str) -> None:
        self._say(f"introspect: {text}")

    def dead_letter(self, letter: DeadLetter) -> None:
        self._say(f"introspect: dead letter from the {letter.service}: {letter.reason}")

    def update(self, received: int, expected: int) -> None:
        now = time.monotonic()
        # A scrape per second at most, and one at the end, so the last word is the final count.
        if self.counts is not None and (now - self._last_counts >= 1.0 or received == expected):
            self._generations, self._last_counts = self.counts(), now
        if self._bar is not None:
            self._bar.total = expected
            self._bar.update(received - self._bar.n)
            if self._generations is not None:
                self._bar.set_postfix_str(self._describe(self._generations), refresh=False)
        elif now - self._last_line >= self.every or (received == expected and self._last_received != received):
            self._last_line, self._last_received = now, received
            generations = "" if self._generations is None else f"; {self._describe(self._generations)}"
            self._say(f"progress: {received}/{expected} observations{generations} ({now - self.started:.0f} s)")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    @staticmethod
    def _describe(counts: GenerationCounts) -> str:
        text = f"{counts.done} generations ({counts.from_cache} from cache), {counts.in_flight} in flight"
        return text + (f", {counts.retries} retried" if counts.retries else "")

    def _say(self, line: str) -> None:
        if self._bar is not None:
            self._bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)
