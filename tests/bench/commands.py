"""Whole commands as a user meets them: `introspect run` (NATS and the four services as
processes) against `introspect evaluate` (one process, no message bus, the same RocksDB
generation cache as the gateway's), from typing the command to its result files.

Both ask one stand-in that answers in 50 ms and takes at most 50 requests at once (429
past that, as TGI does), over the same synthetic sentiment file, cold (an empty data
folder) and warm (the same folder again: every answer cached). `evaluate` gets
`--concurrency 50`, the server's own limit; the gateway reads that limit from `/info`.
Each round runs the four commands, the pipeline first in even rounds and `evaluate`
first in odd ones, each against a fresh stand-in so its window counts that command
alone; the table prints medians over rounds with their range.

Saturation is the busy share of the server's slots while work waited for one: slot-seconds
generating (as the stand-in measured them) / (slots x window), the window from the server's
first generation to the end of its last stretch with every slot taken. After that the job
has fewer questions left than the server has slots (its last observations, each a chain of
questions), and nothing waits. The share over the whole span, first generation to last, is
printed beside it. Start-up and loading are outside both. The last line is the ceiling:
what a bare client (50 loops posting generations back to back, nothing else) gets out of
the same stand-in on the same machine.

    python -m tests.bench.commands [--sizes 20,2000,10000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.local import free_port, wait_for_port
from tests.bench import spread
from tests.support.pipeline import get_json
from tests.support.synthetic import write_synthetic

LATENCY = 0.05  # seconds per generation
SLOTS = 50  # requests the stand-in takes at once
SIZES = (20, 2_000, 10_000)
KINDS = ("pipeline", "in-process")
CEILING_REQUESTS = 10_000  # generations of the bare client (`bare_client`): 10 s at the server's pace


@dataclass(frozen=True)
class Timed:
    seconds: float  # the whole command
    saturation: float  # busy share of the server's slots while work waited for one (0..1); 0: none asked
    saturation_span: float  # the same from its first generation to its last
    generated: int  # generations the server computed
    results: dict[str, object]  # the result JSON's `results`: both commands must agree


def command(kind: str, data: Path, size: int, url: str, folder: Path, out: Path) -> list[str]:
    what = "run" if kind == "pipeline" else "evaluate"
    line = [sys.executable, "-m", "services.cli", what, "--dataset", str(data), "--category", "sentiment",
            "--task", "counterfactual", "--limit", str(size), "--endpoint", url,
            "--data-dir", str(folder), "--out", str(out)]  # fmt: skip
    return line if kind == "pipeline" else [*line, "--concurrency", str(SLOTS)]


@contextlib.contextmanager
def standin() -> Iterator[str]:
    """A fresh stand-in (50 ms, 50 slots): its URL, for one measurement."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "standin", "--port", str(port),
         "--latency", str(LATENCY), "--max-concurrent", str(SLOTS)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_port(port, "the stand-in", server)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait()


def saturations(stats: dict[str, Any]) -> tuple[float, float]:
    """The stand-in's busy share of its slots (0..1): while work waited for one, and over the
    whole span from its first generation to its last (0, 0: it generated nothing). Both
    count the slot-seconds the stand-in measured a request held a slot (its 50 ms, and any
    lateness of its own event loop in ending them), for every client alike. The first
    window ends with the last stretch of full slots: a client that filled them only early
    and briefly would get a short window; these jobs keep them full until their last
    observations."""
    generated = int(stats.get("generated", 0))
    span = stats.get("last_finished_at", 0.0) - stats.get("first_started_at", 0.0)
    waiting = stats.get("last_full_at", 0.0) - stats.get("first_started_at", 0.0)
    over_span = stats["busy_slot_seconds"] / (SLOTS * span) if generated and span > 0 else 0.0
    while_waiting = stats["busy_slot_seconds_until_full"] / (SLOTS * waiting) if generated and waiting > 0 else 0.0
    return while_waiting, over_span


def timed(kind: str, data: Path, size: int, folder: Path, out: Path) -> Timed:
    """One whole command against a fresh stand-in (started, and stopped, outside the time)."""
    with standin() as url:
        started = time.perf_counter()
        done = subprocess.run(command(kind, data, size, url, folder, out), capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"{kind}: exit {done.returncode}\n{done.stderr[-2000:]}")
        stats = get_json(f"{url}/stand-in/stats")
    (result,) = out.glob("*.json")
    return Timed(
        seconds, *saturations(stats), int(stats.get("generated", 0)), json.loads(result.read_text())["results"]
    )


def bare_client(requests: int) -> tuple[float, float]:
    """The most any client gets out of the stand-in on this machine: `SLOTS` loops, each
    posting one generation after another with nothing in between (no protocol, no cache,
    no messages), in a process of their own. What the server spends on a request besides
    its 50 ms (HTTP, JSON) and the trip back and forth count as idle slot time for every
    client alike."""
    with standin() as url:
        code = "import asyncio, sys; from tests.bench.commands import post_back_to_back; "
        code += "asyncio.run(post_back_to_back(sys.argv[1], int(sys.argv[2])))"
        subprocess.run([sys.executable, "-c", code, url, str(requests)], check=True)
        return saturations(get_json(f"{url}/stand-in/stats"))


async def post_back_to_back(url: str, requests: int) -> None:
    import aiohttp

    body = {"inputs": "<s>[INST] What is the sentiment of this paragraph? [/INST]",
            "parameters": {"max_new_tokens": 20, "seed": 0}}  # fmt: skip
    left = requests

    async def loop(session: aiohttp.ClientSession) -> None:
        nonlocal left
        while left > 0:
            left -= 1
            async with session.post(f"{url}/generate", json=body) as response:
                response.raise_for_status()
                await response.read()

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        await asyncio.gather(*(loop(session) for _ in range(SLOTS)))


def one_round(tmp: Path, data: Path, size: int, number: int) -> dict[tuple[str, str], Timed]:
    """Cold then warm for both commands; the pipeline first in even rounds."""
    order = KINDS if number % 2 == 0 else KINDS[::-1]
    done: dict[tuple[str, str], Timed] = {}
    for phase in ("cold", "warm"):
        for kind in order:
            folder = tmp / f"{kind}-{size}-{number}"
            done[kind, phase] = timed(kind, data, size, folder / "data", folder / f"out-{phase}")
    for phase in ("cold", "warm"):
        pipeline, in_process = done["pipeline", phase].results, done["in-process", phase].results
        if pipeline != in_process:
            raise SystemExit(f"{size} obs, {phase}: the pipeline's results differ from evaluate's")
    if done["pipeline", "warm"].generated or done["in-process", "warm"].generated:
        raise SystemExit(f"{size} obs: a warm run asked the server (its cache missed)")
    return done


GOALS = {("cold", 20): ">= 1.00", ("warm", 20): ">= 1.00", ("cold", 2_000): ">= 1.50",
         ("cold", 10_000): ">= 2.00"}  # fmt: skip


def table(sizes: tuple[int, ...], rounds: int) -> list[str]:
    lines = [
        f"whole commands: stand-in {LATENCY * 1000:.0f} ms, {SLOTS} slots; counterfactual, synthetic sentiment; "
        f"median (range) of {rounds} rounds",
        f"  {'obs':>6} {'phase':5} {'run s':>24} {'evaluate s':>24} {'ratio':>24} {'goal':>8} "
        f"{'saturation run':>32} {'saturation eval':>32}",
    ]
    print("\n".join(lines), flush=True)
    with tempfile.TemporaryDirectory(prefix="introspect-commands-") as folder:
        tmp = Path(folder)
        data = write_synthetic(tmp / "data", rows=max(sizes))["sentiment"]
        for size in sizes:
            done = [one_round(tmp, data, size, number) for number in range(rounds)]
            for phase in ("cold", "warm"):
                run = [d["pipeline", phase] for d in done]
                ev = [d["in-process", phase] for d in done]
                # ratio: how many times faster the pipeline's whole command is (>1: faster)
                ratio = [e.seconds / r.seconds for r, e in zip(run, ev, strict=True)]
                goal = GOALS.get((phase, size), ">= 1.00" if phase == "warm" else "")
                saturation_run = _saturation(run) if phase == "cold" else "-"
                saturation_ev = _saturation(ev) if phase == "cold" else "-"
                lines.append(
                    f"  {size:>6} {phase:5} {spread([r.seconds for r in run]):>24} "
                    f"{spread([e.seconds for e in ev]):>24} {spread(ratio):>24} {goal:>8} "
                    f"{saturation_run:>32} {saturation_ev:>32}"
                )
                print(lines[-1], flush=True)
    ceiling = [bare_client(CEILING_REQUESTS) for _ in range(rounds)]
    waiting = spread([100 * w for w, _ in ceiling], "{:.0f}%")
    span = statistics.median(100 * s for _, s in ceiling)
    lines.append(
        f"  the ceiling: {SLOTS} loops posting {CEILING_REQUESTS} generations back to back, nothing else: "
        f"saturation {waiting}, span {span:.0f}%; the goal for run: >= 95%"
    )
    print(lines[-1], flush=True)
    return lines


def _saturation(timed: list[Timed]) -> str:
    """While work waited, in percent (median and range), then the median over the whole span;
    only the span where the server was never full."""
    span = f"span {statistics.median(100 * t.saturation_span for t in timed):.0f}%"
    if not any(t.saturation for t in timed):
        return span
    return f"{spread([100 * t.saturation for t in timed], '{:.0f}%')}, {span}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="observations per job, comma-separated")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    table(tuple(int(size) for size in args.sizes.split(",")), args.rounds)


if __name__ == "__main__":
    main()
