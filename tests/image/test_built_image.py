"""The image, built and run: the Dockerfile built with Podman on a base made here from Debian's
packages, then a whole `introspect run` in the image's file system as its user (10001) with a
read-only root, whose result files must equal those of the same experiment run here.

Minutes (debootstrap about 1 min on a clean machine, the build about 3.5 min): `just test-image`
and CI run it; `just test` leaves it out. Needs root, podman and debootstrap (.ci/run installs them).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from services.cli import main
from tests.conftest import DATASET_MIRROR
from tests.support import image
from tests.support.image import Bind, ImageError

pytestmark = [pytest.mark.image, pytest.mark.slow]

TAG = "localhost/introspect:image-test"
EXPERIMENT = "analysis_m-llama2-7b_y-none_d-imdb_p-test_t-counterfactual_c-_s-0"
USER = 10001


@pytest.fixture(scope="module")
def built() -> str:
    """The Dockerfile, built on the local Debian base (its BASE argument), as TAG."""
    try:
        return image.build(TAG, image.local_base())
    except ImageError as error:  # podman or debootstrap missing, not root, a failed build: one clear line
        pytest.fail(f"image: {error}", pytrace=False)


def test_a_whole_run_in_the_image_as_its_user_with_a_read_only_root_equals_one_outside(
    built: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    os.chown(out, USER, USER)  # a volume the pod's user may write
    binds = [Bind(DATASET_MIRROR, "/tmp/datasets"), Bind(out, "/tmp/out", read_only=False)]
    argv = ["run", "--dataset", "IMDB", "--task", "counterfactual", "--mirror", "/tmp/datasets",
            "--data-dir", "/tmp/introspect", "--out", "/tmp/out"]  # fmt: skip
    result = image.run(built, argv, binds, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "answers from the stand-in" in result.stderr
    assert f"results: /tmp/out/{EXPERIMENT}.json" in result.stdout
    assert {path.name for path in out.iterdir()} == {f"{EXPERIMENT}.json", f"{EXPERIMENT}.parquet"}
    assert {(path.stat().st_uid, path.stat().st_gid) for path in out.iterdir()} == {(USER, USER)}

    # The same experiment outside the image, in one process: the same results and records.
    outside = tmp_path / "outside"
    common = ["--dataset", "IMDB", "--task", "counterfactual", "--mirror", str(DATASET_MIRROR)]
    assert main(["evaluate", *common, "--out", str(outside)]) == 0
    inside_json = json.loads((out / f"{EXPERIMENT}.json").read_text())
    outside_json = json.loads((outside / f"{EXPERIMENT}.json").read_text())
    assert inside_json["results"]["total"] == 20
    assert inside_json["results"] == outside_json["results"] and inside_json["args"] == outside_json["args"]
    assert inside_json["provenance"]["stand_in"] is True
    assert inside_json["provenance"]["written_by"] == "introspect aggregator"  # the pipeline, not `evaluate`
    records = pd.read_parquet(out / f"{EXPERIMENT}.parquet").sort_values("idx").reset_index(drop=True)
    expected = pd.read_parquet(outside / f"{EXPERIMENT}.parquet").sort_values("idx").reset_index(drop=True)
    assert len(records) == 20
    pd.testing.assert_frame_equal(records, expected)


CHECK = """
import errno, importlib, os, pkgutil, sys
assert (os.getuid(), os.getgid()) == (10001, 10001), (os.getuid(), os.getgid())
for path in ("/opt/introspect/x", "/home/introspect/x", "/etc/x"):
    try:
        open(path, "w")
    except OSError as error:
        assert error.errno == errno.EROFS, (path, error)
    else:
        sys.exit(f"{path}: written, the root is not read-only")
open("/tmp/x", "w").write("the tmpfs")
import proto, services
modules = [m.name for p in (services, proto) for m in pkgutil.walk_packages(p.__path__, p.__name__ + ".")]
names = [name for name in modules if not name.endswith(".__main__")]  # that one runs the command
for name in names:
    importlib.import_module(name)
# what `introspect compare` and `figures` call, from the libraries the build stage pruned
import plotnine, scipy.stats, statsmodels.api, pyarrow.parquet, kubernetes.client, datasets
print(len(names), "modules", sys.version.split()[0], sys.executable)
"""


def test_the_image_runs_as_10001_on_a_read_only_root_and_every_module_imports(built: str) -> None:
    """Also guards what the build stage removed (the libraries' tests, the asyncio Kubernetes client)."""
    result = image.run(built, ["-c", CHECK], entrypoint=["python3"], timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    count, unit, version, executable = result.stdout.split()
    assert unit == "modules" and int(count) > 50 and version.startswith("3.11")
    assert executable == "/opt/introspect/bin/python3"
