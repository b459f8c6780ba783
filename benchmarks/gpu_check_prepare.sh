#!/usr/bin/env bash
# Prepare what benchmarks/gpu_check.sh needs on an offline GPU host, here on a machine with the package registry
# and PyAV (project root; PYTHON: the project's environment, default python3). Everything lands in .device_site/
# (git-ignored), the one folder to carry: the packages device_site.sh brings, pytest for the GPU tests (pure
# Python wheels), and the small synthetic set with its pretrained tiny LLM (data/, about 2 MB).
#
#   bash benchmarks/gpu_check_prepare.sh [path/to/device_site.sh]     # default ../shared/tools/device_site.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PY=${PYTHON:-python3}
bash "${1:-../shared/tools/device_site.sh}"
DL=$(mktemp -d)
python3 -m pip download -q --no-deps --only-binary=:all: -d "$DL" pytest pluggy iniconfig
for wheel in "$DL"/*.whl; do python3 -m zipfile -e "$wheel" .device_site/site; done
rm -rf "$DL"
PYTHONPATH="$ROOT/src:$ROOT" "$PY" -m tests.gpu.prepare .device_site/data
du -sh .device_site
