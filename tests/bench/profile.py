"""`just profile`: where a generation's CPU goes, process by process.

Runs the benchmark's counterfactual job on a fresh pipeline, cold then warm, and prints the
CPU milliseconds per generation of every process: the services, nats-server and the
stand-in. With `--py-spy DIR` it also samples each service with py-spy and writes one
collapsed-stack file per service and run (`cold-gateway-0.txt`, ...), which speedscope or
flamegraph.pl read. Sampling costs CPU of its own: compare runs made the same way.

    python -m tests.bench.profile [--size 3000] [--py-spy DIR]
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from proto import Job
from services.local import LocalPipeline
from tests.bench.run import cpu_seconds, run_job
from tests.support.synthetic import write_synthetic


def sample(py_spy: str, pid: int, output: Path) -> subprocess.Popen[bytes]:
    command = [py_spy, "record", "--rate", "200", "--format", "raw", "--pid", str(pid), "--output", str(output)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=3000, help="observations in the job")
    parser.add_argument("--py-spy", type=Path, metavar="DIR", help="also sample each service with py-spy into DIR")
    args = parser.parse_args()
    py_spy = shutil.which("py-spy")
    if args.py_spy and py_spy is None:
        raise SystemExit("profile: py-spy is not installed (pip install py-spy)")

    with tempfile.TemporaryDirectory(prefix="introspect-profile-") as folder:
        tmp = Path(folder)
        files = write_synthetic(tmp / "data", rows=args.size)
        job = Job(job_id="", model="llama2-7b", dataset=str(files["sentiment"]), category="sentiment",
                  task="counterfactual", limit=args.size)  # fmt: skip
        with LocalPipeline(tmp / "pipeline", standin_args=("--max-concurrent", "100000")) as pipeline:
            pids = {name: process.pid for name, process in pipeline.processes.items()}
            for run in ("cold", "warm"):
                samplers = []
                if args.py_spy and py_spy:
                    args.py_spy.mkdir(parents=True, exist_ok=True)
                    samplers = [
                        sample(py_spy, pids[name], args.py_spy / f"{run}-{name}.txt")
                        for name in pipeline.service_names()
                    ]
                    time.sleep(1.0)  # py-spy attaches
                before = {name: cpu_seconds(pid) for name, pid in pids.items()}
                timed = run_job(pipeline, job)
                after = {name: cpu_seconds(pid) for name, pid in pids.items()}
                for sampler in samplers:
                    sampler.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
                    sampler.wait()
                print(f"{run}: {timed.questions} generations in {timed.seconds:.2f} s "
                      f"({timed.questions / timed.seconds:.0f} gen/s); CPU-ms per generation:")  # fmt: skip
                for name in pids:
                    print(f"  {name:12} {1000 * (after[name] - before[name]) / timed.questions:.3f}")
                total = sum(after.values()) - sum(before.values())
                print(f"  {'all':12} {1000 * total / timed.questions:.3f}")


if __name__ == "__main__":
    main()
