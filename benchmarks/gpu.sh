#!/usr/bin/env bash
# The GPU benchmark: at most 8 minutes on one H200, one JSON.
#
#   bash benchmarks/gpu.sh [OUT.json]         on a CUDA machine (default OUT: gpu-bench.json)
#   bash benchmarks/gpu.sh --dry [OUT.json]   the same commands at a tiny size on the CPU, in seconds (compiled by
#                                             the aot_eager backend: dynamo's tracing, without generating code)
#
# Measures, each under fp32 (TF32 matmuls) and under bf16 + torch.compile (block by block: the 28 identical blocks
# of an XL model compile once, chosen so that compiling fits the parts' time limits): the DiT^DH-XL and DiT-XL train
# steps at batch 256 (two micro-batches of 128), the ViT-XL decoder's train step, and AutoGuidance sampling at 256 px
# (Euler, 50 time points, guide DiT^DH-S, decoded): 1,000 samples in bf16 + compile, 500 in fp32; with the model
# FLOP utilization of each against the H200's dense peak. The JSON's "targets" says whether DiT^DH-XL trains at
# >= 45% MFU in bf16 and whether 50,000 AutoGuidance samples take under an hour (true / false; null when not
# measured). The time limits of the parts (445 s) and of their kills (5 s each) add up to 480 s.
# Each part runs under its own time limit; a part that fails or runs out of time is listed under "missing" and the
# others are kept (the exit status is then 1). Needs python with torch (CUDA) and raedit's dependencies ($PYTHON,
# else .venv/bin/python when there is one, else python); raedit itself is taken from src/.
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
  device=cpu; ditdh=tiny; dit=tiny
  train=(--train-batch 4 --micro-batch 2); decoder_batch=4
  big_sample=(--sample-batch 4); small_sample=(--sample-batch 2); steps=2; timing=(--rounds 1 --calls 1 --warmup 0)
  backend=(--compile-backend aot_eager)
  # The real presets must resolve (their configs, not their weights) before a GPU minute is spent.
  "$python" -c 'from raedit.jobs.bench_targets import resolve_target as r; r("ditdh-xl-256"); r("dit-xl-256")'
else
  device=cuda; ditdh=ditdh-xl-256; dit=dit-xl-256
  # Batch 256 in two micro-batches of 128, the per-GPU batch of the paper's 1024 over 8 GPUs: by an estimate of the
  # activations DiT^DH-XL keeps for its backward pass, 256 at once in fp32 would not fit in 141 GB.
  train=(--train-batch 256 --micro-batch 128); decoder_batch=64; big_sample=(--sample-batch 500)
  small_sample=(--sample-batch 250); steps=49; timing=(--rounds 2 --calls 2 --warmup 1); backend=()
fi

# run_part NAME SECONDS ARGS...: one `raedit bench` under a time limit, its report in $parts_dir/NAME.json.
run_part() {
  local name="$1" seconds="$2"; shift 2
  echo "== $name (at most ${seconds}s)"
  if ! timeout -k 5 "$seconds" "$python" -m raedit.cli bench "$@" "${backend[@]}" --device "$device" \
      --json "$parts_dir/$name.json"; then
    echo "== $name failed or ran out of time"
  fi
}

# Each path of the XL train steps in a process of its own: only one model, its EMA and its optimizer on the GPU.
for model in ditdh dit; do
  target="${!model}"
  run_part "$model-xl-train-fp32" "$([[ $model == ditdh ]] && echo 45 || echo 40)" "$target" --parts train \
    --paths fp32 "${train[@]}" "${timing[@]}"
  run_part "$model-xl-train-bf16-compile" "$([[ $model == ditdh ]] && echo 75 || echo 70)" "$target" --parts train \
    --paths bf16+compile-blocks "${train[@]}" "${timing[@]}"
done
run_part decoder-xl-train 45 "$ditdh" --parts decoder-train --paths fp32,bf16+compile-blocks \
  --decoder-batch "$decoder_batch" "${timing[@]}"
# 1,000 samples in bf16 + compile (the first call, compiling included, and one timed call of 500); 500 in fp32.
run_part sample-ag-bf16-compile 105 "$ditdh" --parts sample --samplers euler --guidance ag \
  --paths bf16+compile-blocks "${big_sample[@]}" --sample-steps "$steps" --rounds 1 --calls 1 --warmup 0
run_part sample-ag-fp32 65 "$ditdh" --parts sample --samplers euler --guidance ag --paths fp32 \
  "${small_sample[@]}" --sample-steps "$steps" --rounds 1 --calls 1 --warmup 0

"$python" - "$parts_dir" "$out" "$dry" <<'EOF'
import json
import sys
from pathlib import Path

parts_dir, out, dry = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "1"
names = ["ditdh-xl-train-fp32", "ditdh-xl-train-bf16-compile", "dit-xl-train-fp32", "dit-xl-train-bf16-compile",
         "decoder-xl-train", "sample-ag-bf16-compile", "sample-ag-fp32"]
parts = {name: json.loads((parts_dir / f"{name}.json").read_text()) for name in names
         if (parts_dir / f"{name}.json").is_file()}


def row(part):
    rows = parts.get(part, {}).get("rows", [])
    return rows[0] if rows else None


train = row("ditdh-xl-train-bf16-compile")
sampling = row("sample-ag-bf16-compile")
sampling_fp32 = row("sample-ag-fp32")
mfu = train["mfu"] if train else None
hours = {name: 50_000 / r["items_per_s"] / 3600 if r else None for name, r in (("bf16", sampling),
                                                                              ("fp32", sampling_fp32))}
targets = {
    "ditdh_xl_train_bf16_compile_mfu": mfu,
    "ditdh_xl_train_mfu_target": 0.45,
    "ditdh_xl_train_mfu_met": mfu >= 0.45 if mfu is not None else None,
    "hours_for_50k_ag_samples_bf16_compile": hours["bf16"],
    "hours_for_50k_ag_samples_fp32": hours["fp32"],
    "hours_for_50k_target": 1.0,
    "hours_for_50k_met_bf16_compile": hours["bf16"] < 1.0 if hours["bf16"] is not None else None,
}
report = {"script": "benchmarks/gpu.sh", "dry": dry, "device": next(iter(parts.values()))["device"] if parts else None,
          "commit": next(iter(parts.values()))["commit"] if parts else None,
          "missing": [name for name in names if name not in parts], "targets": targets, "parts": parts}
out.write_text(json.dumps(report, indent=2) + "\n")
print(json.dumps({key: report[key] for key in ("device", "missing", "targets")}, indent=2))
print(f"wrote {out}")
sys.exit(1 if report["missing"] else 0)
EOF
