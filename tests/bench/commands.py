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

Saturation is the busy share of the server's slots from its first generation to its last:
generated x latency / (slots x window); start-up and loading are outside that window.

    python -m tests.bench.commands [--sizes 20,2000,10000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from services.local import free_port, wait_for_port
from tests.bench import spread
from tests.support.pipeline import get_json
from tests.support.synthetic import write_synthetic

LATENCY = 0.05  # seconds per generation
SLOTS = 50  # requests the stand-in takes at once
SIZES = (20, 2_000, 10_000)
KINDS = ("pipeline", "in-process")


@dataclass(frozen=True)
class Timed:
    seconds: float  # the whole command
    saturation: float  # busy share of the server's slots while it generated (0..1); 0: none asked
    generated: int  # generations the server computed
    results: dict[str, object]  # the result JSON's `results`: both commands must agree


def command(kind: str, data: Path, size: int, url: str, folder: Path, out: Path) -> list[str]:
    what = "run" if kind == "pipeline" else "evaluate"
    line = [sys.executable, "-m", "services.cli", what, "--dataset", str(data), "--category", "sentiment",
            "--task", "counterfactual", "--limit", str(size), "--endpoint", url,
            "--data-dir", str(folder), "--out", str(out)]  # fmt: skip
    return line if kind == "pipeline" else [*line, "--concurrency", str(SLOTS)]


def timed(kind: str, data: Path, size: int, folder: Path, out: Path) -> Timed:
    """One whole command against a fresh stand-in (started, and stopped, outside the time)."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "standin", "--port", str(port),
         "--latency", str(LATENCY), "--max-concurrent", str(SLOTS)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_port(port, "the stand-in", server)
        url = f"http://127.0.0.1:{port}"
        started = time.perf_counter()
        done = subprocess.run(command(kind, data, size, url, folder, out), capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"{kind}: exit {done.returncode}\n{done.stderr[-2000:]}")
        stats = get_json(f"{url}/stand-in/stats")
    finally:
        server.terminate()
        server.wait()
    generated = int(stats.get("generated", 0))
    window = stats.get("last_finished_at", 0.0) - stats.get("first_started_at", 0.0)
    saturation = generated * LATENCY / (SLOTS * window) if generated and window > 0 else 0.0
    (result,) = out.glob("*.json")
    return Timed(seconds, saturation, generated, json.loads(result.read_text())["results"])


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
        f"{'saturation run':>24} {'saturation eval':>24}",
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
                saturation_run = spread([100 * r.saturation for r in run], "{:.0f}%") if phase == "cold" else "-"
                saturation_ev = spread([100 * e.saturation for e in ev], "{:.0f}%") if phase == "cold" else "-"
                lines.append(
                    f"  {size:>6} {phase:5} {spread([r.seconds for r in run]):>24} "
                    f"{spread([e.seconds for e in ev]):>24} {spread(ratio):>24} {goal:>8} "
                    f"{saturation_run:>24} {saturation_ev:>24}"
                )
                print(lines[-1], flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="observations per job, comma-separated")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    table(tuple(int(size) for size in args.sizes.split(",")), args.rounds)


if __name__ == "__main__":
    main()
