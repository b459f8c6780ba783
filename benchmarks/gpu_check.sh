#!/usr/bin/env bash
# One prepared check for a lent GPU machine (at most 8 minutes on one H200): the GPU tests, the 7B stage-3
# training table, an MVBench-sized evaluation benchmark and a profile of one 7B bf16 LoRA step (where the
# time goes), leaving one JSON file of figures.
#
# Before (on a machine with the package registry and PyAV, in the project root):
#   bash ../shared/tools/device_site.sh                      # hydra, omegaconf, decord, bitsandbytes -> .device_site/
#   python -m tests.gpu.prepare .device_site/data            # the small synthetic set and its tiny LLM (~2 MB)
# Then carry .device_site to the GPU host and run there, from the project root:
#   bash benchmarks/gpu_check.sh [OUT_JSON]                  # default: $OUT/gpu_check.json, else ./gpu_check.json
# Dry run on a CPU (tiny shapes, the GPU tests skip with their reason), to check the script itself:
#   DRY_RUN=1 PYTHON=.venv/bin/python bash benchmarks/gpu_check.sh /tmp/gpu_check.json
#
# Each part has its own time limit, and a part that fails or times out is recorded as such in the JSON;
# the script goes on to the next part and exits non-zero at the end if any part failed.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
RESULT=${1:-${OUT:-.}/gpu_check.json}
PY=${PYTHON:-python3}
DRY=${DRY_RUN:-0}
WORK=$(mktemp -d)
SITE=$ROOT/.device_site

# Packages the GPU host lacks come from .device_site (decord as a wheel, the rest unpacked); never CPU torch.
EXTRA=""
if [ -d "$SITE/site" ]; then
  if ls "$SITE"/wheels/decord-*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --target "$WORK/dec" "$SITE"/wheels/decord-*.whl >/dev/null 2>&1 \
      || echo "decord wheel did not install; clips fall back to the other readers" >&2
  fi
  EXTRA="$SITE/site:$WORK/dec:"
fi
export PYTHONPATH="${EXTRA}$ROOT/src:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export VIDEOCHAT2_TEST_DATA=${VIDEOCHAT2_TEST_DATA:-$SITE/data}
export TOKENIZERS_PARALLELISM=false

if [ "$DRY" = 1 ]; then
  DEVICE=cpu
  TRAIN_ARGS=(--llm7b --small --device cpu --steps 1)
  EVAL_ARGS=(--model-shape tiny --device cpu --questions 32 --sample-batches 1 --batch-size 4 --workers 1 --per-task 1)
  PROFILE_ARGS=(--llm7b --small --device cpu --profile 2)
  LIMITS=(240 240 240 240)
else
  DEVICE=cuda
  TRAIN_ARGS=(--llm7b --steps 2 --batches 1,8)
  EVAL_ARGS=(--model-shape 7b --questions 4000 --sample-batches 6 --batch-size 16 --workers 8 --per-task 5)
  PROFILE_ARGS=(--llm7b --profile 4)
  LIMITS=(210 140 75 50)
fi

# part NAME LIMIT_S COMMAND...: run it under its limit, log to WORK/NAME.log, record "exit seconds".
part() {
  local name=$1 limit=$2 start code
  shift 2
  start=$(date +%s)
  echo "== $name (limit ${limit}s): $*" >&2
  timeout --kill-after=10 "$limit" "$@" >"$WORK/$name.log" 2>&1
  code=$?
  echo "$code $(($(date +%s) - start))" >"$WORK/$name.status"
  tail -n 5 "$WORK/$name.log" >&2
  return 0
}

"$PY" - "$WORK/meta.json" "$DEVICE" "$DRY" <<'EOF'
import json, subprocess, sys, time
import torch
device, dry = sys.argv[2], sys.argv[3] == "1"
cuda = torch.cuda.is_available()
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
meta = {
    "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "dry_run": dry,
    "device": torch.cuda.get_device_name(0) if cuda else "cpu",
    "torch": torch.__version__,
    "cuda": torch.version.cuda,
    "commit": commit or None,
}
# What the check's parts import: a missing one explains a failed part at a glance.
import importlib.util
needed = ("lightning", "transformers", "peft", "hydra", "omegaconf", "decord", "bitsandbytes", "matplotlib", "pytest")
meta["modules_missing"] = [name for name in needed if importlib.util.find_spec(name) is None]
if device == "cuda" and not cuda:
    meta["error"] = "no CUDA device visible: the GPU figures are not measured"
json.dump(meta, open(sys.argv[1], "w"))
print(json.dumps(meta))
EOF

part tests "${LIMITS[0]}" "$PY" -m pytest -q -p no:cacheprovider tests/gpu --junitxml="$WORK/tests.xml"
part train "${LIMITS[1]}" "$PY" benchmarks/train_throughput.py "${TRAIN_ARGS[@]}"
part eval "${LIMITS[2]}" "$PY" benchmarks/eval_throughput.py "${EVAL_ARGS[@]}" \
  --benchmark-root "$VIDEOCHAT2_TEST_DATA/synthetic/mvbench"
part profile "${LIMITS[3]}" "$PY" benchmarks/train_throughput.py "${PROFILE_ARGS[@]}"

"$PY" benchmarks/gpu_check_collect.py "$WORK" "$RESULT"
failed=0
for name in tests train eval profile; do
  read -r code _ <"$WORK/$name.status"
  [ "$code" = 0 ] || { echo "part $name exited $code (log: $WORK/$name.log)" >&2; failed=1; }
done
exit $failed
