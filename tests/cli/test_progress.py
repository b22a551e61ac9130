"""What `introspect run` shows while it runs, away from a terminal: plain lines."""

from __future__ import annotations

import io
import itertools

from proto import DeadLetter
from services.cli import progress as progress_module
from services.cli.progress import RunProgress
from services.local import GenerationCounts


def test_plain_lines_every_few_seconds_and_the_last_one_once(monkeypatch) -> None:
    clock = itertools.count(100.0, 0.5)  # each reading half a second later
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: next(clock))
    stream = io.StringIO()
    counts = GenerationCounts(done=30, from_cache=10, in_flight=4, retries=0)
    shown = RunProgress(lambda: counts, stream=stream, every=5.0)
    for received in [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 20, 20, 20]:
        shown.update(received, 20)
    shown.close()
    lines = stream.getvalue().splitlines()
    assert lines == [
        "progress: 0/20 observations; 30 generations (10 from cache), 4 in flight (0 s)",
        "progress: 10/20 observations; 30 generations (10 from cache), 4 in flight (6 s)",
        "progress: 20/20 observations; 30 generations (10 from cache), 4 in flight (7 s)",
    ]


def test_steps_retries_and_dead_letters_are_said_as_they_happen() -> None:
    stream = io.StringIO()
    shown = RunProgress(lambda: GenerationCounts(3, 0, 1, retries=2), stream=stream)
    shown.step("starting NATS")
    shown.update(0, 5)
    letter = DeadLetter(service="gateway", subject="introspect.generate.llama2-7b.0",
                        reason="offline: this generation is not in the cache", payload=b"")  # fmt: skip
    shown.dead_letter(letter)
    assert stream.getvalue().splitlines() == [
        "introspect: starting NATS",
        "progress: 0/5 observations; 3 generations (0 from cache), 1 in flight, 2 retried (0 s)",
        "introspect: dead letter from the gateway: offline: this generation is not in the cache",
    ]
