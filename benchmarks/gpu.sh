#!/usr/bin/env bash
# The GPU benchmark: at most 8 minutes on one H200, one JSON.
#
#   bash benchmarks/gpu.sh [OUT.json]         on a CUDA machine (default OUT: gpu-bench.json)
#   bash benchmarks/gpu.sh --dry [OUT.json]   the same commands at a tiny size on the CPU, in seconds
#
# Measures, each under fp32 (TF32 matmuls) and bf16 + torch.compile: the DiT^DH-XL and DiT-XL train steps at batch
# 256, the ViT-XL decoder's train step, and 1,000 samples at 256 px (Euler, 50 time points, AutoGuidance by
# DiT^DH-S), with the model FLOP utilization of each against the H200's dense peak. It then checks the targets:
# DiT^DH-XL training at >= 45% MFU in bf16, and 50,000 AutoGuidance samples in under an hour.
# Each part runs under its own time limit; a part that fails or runs out of time is listed under "missing" and the
# others are kept (the exit status is then 1). Needs python with torch (CUDA) and raedit's dependencies; raedit itself is taken from src/ ($PYTHON, else
# .venv/bin/python when there is one, else python).
set -euo pipefail

dry=0
if [[ "${1:-}" == "--dry" ]]; then dry=1; shift; fi
out="${1:-gpu-bench.json}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python}"
if [[ -z "${PYTHON:-}" && -x "$here/.venv/bin/python" ]]; then python="$here/.venv/bin/python"; fi
export PYTHONPATH="$here/src${PYTHONPATH:+:$PYTHONPATH}"
parts_dir="$(mktemp -d)"
trap 'rm -rf "$parts_dir"' EXIT

if (( dry )); then
  device=cpu; ditdh=tiny; dit=tiny; paths=fp32,bf16
  train_batch=4; decoder_batch=4; sample_batch=4; steps=2; rounds=1; calls=1
else
  device=cuda; ditdh=ditdh-xl-256; dit=dit-xl-256; paths=fp32,bf16+compile
  train_batch=256; decoder_batch=64; sample_batch=500; steps=49; rounds=3; calls=3
fi

# run_part NAME SECONDS ARGS...: one `raedit bench` under a time limit, its report in $parts_dir/NAME.json.
run_part() {
  local name="$1" seconds="$2"; shift 2
  echo "== $name (at most ${seconds}s)"
  if ! timeout "$seconds" "$python" -m raedit.cli bench "$@" --device "$device" \
      --json "$parts_dir/$name.json"; then
    echo "== $name failed or ran out of time"
  fi
}

run_part ditdh-xl-train 110 "$ditdh" --parts train --paths "$paths" --train-batch "$train_batch" \
  --rounds "$rounds" --calls "$calls"
run_part dit-xl-train 100 "$dit" --parts train --paths "$paths" --train-batch "$train_batch" \
  --rounds "$rounds" --calls "$calls"
run_part decoder-xl-train 60 "$ditdh" --parts decoder-train --paths "$paths" --train-batch "$decoder_batch" \
  --rounds "$rounds" --calls "$calls"
# 1,000 samples a path: the first call (compiling included) and one timed call, of 500 each.
run_part sample-ag 200 "$ditdh" --parts sample --samplers euler --guidance ag --paths "$paths" \
  --sample-batch "$sample_batch" --sample-steps "$steps" --rounds 1 --calls 1 --warmup 0

"$python" - "$parts_dir" "$out" "$dry" <<'EOF'
import json
import sys
from pathlib import Path

parts_dir, out, dry = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "1"
names = ["ditdh-xl-train", "dit-xl-train", "decoder-xl-train", "sample-ag"]
parts = {name: json.loads((parts_dir / f"{name}.json").read_text()) for name in names
         if (parts_dir / f"{name}.json").is_file()}


def row(part, path_prefix):
    rows = [r for r in parts.get(part, {}).get("rows", []) if r["path"].startswith(path_prefix)]
    return rows[0] if rows else None


train = row("ditdh-xl-train", "bf16")
sampling = row("sample-ag", "bf16")
sampling_fp32 = row("sample-ag", "fp32")
targets = {
    "ditdh_xl_train_bf16_mfu": train["mfu"] if train else None,
    "ditdh_xl_train_mfu_target": 0.45,
    "hours_for_50k_ag_samples_bf16": 50_000 / sampling["items_per_s"] / 3600 if sampling else None,
    "hours_for_50k_ag_samples_fp32": 50_000 / sampling_fp32["items_per_s"] / 3600 if sampling_fp32 else None,
    "hours_for_50k_target": 1.0,
}
report = {"script": "benchmarks/gpu.sh", "dry": dry, "device": next(iter(parts.values()))["device"] if parts else None,
          "commit": next(iter(parts.values()))["commit"] if parts else None,
          "missing": [name for name in names if name not in parts], "targets": targets, "parts": parts}
out.write_text(json.dumps(report, indent=2) + "\n")
print(json.dumps({key: report[key] for key in ("device", "missing", "targets")}, indent=2))
print(f"wrote {out}")
sys.exit(1 if report["missing"] else 0)
EOF
