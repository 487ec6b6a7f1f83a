"""`raedit bench`: every part and path measured at the tiny size, with FLOPs, rates and MFU that add up; the GPU
script's dry run; the peak table and the ratio of alternated timings."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from raedit.cli import main
from raedit.core.errors import RaeditError
from raedit.encoders import get_spec
from raedit.encoders.dinov2 import Dinov2Encoder
from raedit.jobs.bench import BenchConfig, SpeedPath, run_bench
from raedit.jobs.bench_targets import resolve_target
from raedit.perf.devices import peak_tflops
from raedit.perf.flops import counted_flops, decoder_flops, denoiser_flops, encoder_flops, train_step_flops
from raedit.perf.timing import PathTimes, speedup_over

ROOT = Path(__file__).resolve().parents[1]
STEPS = 2


@pytest.fixture(scope="module")
def report() -> dict:
    config = BenchConfig("tiny", paths=("fp32", "bf16+ckpt"), samplers=("euler", "heun"), sample_steps=STEPS,
                         train_batch=4, micro_batch=2, rounds=2, calls=1, warmup=0, peak_tflops=2.0)
    return run_bench(config)


def test_every_part_is_measured_under_every_path(report):
    parts = [(row["part"], row["path"]) for row in report["rows"]]
    sampling = [f"sample/{sampler}/{guidance}" for sampler in ("euler", "heun") for guidance in ("none", "cfg", "ag")]
    # Activation checkpointing acts on the denoiser's train step only; the other parts run without it.
    expected = [("train", "fp32"), ("train", "bf16+ckpt")] + [
        (part, path) for part in ["decoder-train", *sampling, "decoder/tiny/8px"] for path in ("fp32", "bf16")]
    assert parts == expected
    rows = report["rows"]
    for baseline, other in zip(rows[::2], rows[1::2]):
        assert len(baseline["rounds_s"]) == len(other["rounds_s"]) == 2
        assert baseline["speedup_vs_first_path"] == 1.0
        ratios = [b / o for b, o in zip(baseline["rounds_s"], other["rounds_s"])]
        assert other["speedup_vs_first_path"] == pytest.approx(statistics.median(ratios))


def test_flops_rates_and_mfu_add_up(report):
    target = resolve_target("tiny")
    main_flops, guide_flops = denoiser_flops(target.denoiser), denoiser_flops(target.guide)
    decode = decoder_flops(target.decoder)
    per_item = {"train": train_step_flops(main_flops), "decoder-train": train_step_flops(decode),
                "sample/euler/none": STEPS * main_flops + decode,
                "sample/euler/cfg": 2 * STEPS * main_flops + decode,  # one batch of 2B per step
                "sample/euler/ag": STEPS * (main_flops + guide_flops) + decode,
                "sample/heun/none": 2 * STEPS * main_flops + decode,  # two evaluations a step
                "sample/heun/cfg": 4 * STEPS * main_flops + decode,
                "sample/heun/ag": 2 * STEPS * (main_flops + guide_flops) + decode,
                "decoder/tiny/8px": decode}
    for row in report["rows"]:
        assert row["gflops_per_item"] == pytest.approx(per_item[row["part"]] / 1e9, rel=1e-12)
        assert row["items_per_s"] == pytest.approx(row["batch"] / row["seconds_per_call"])
        assert row["achieved_tflops"] == pytest.approx(row["gflops_per_item"] * row["items_per_s"] / 1e3)
        assert row["mfu"] == pytest.approx(row["achieved_tflops"] / 2.0)  # --peak-tflops 2
        assert row["peak_memory_gib"] is None  # CUDA only
    assert report["device"] == "cpu" and report["peak_tflops"] == {"bf16": 2.0, "fp32": 2.0}


def test_the_command_writes_json_and_marks_a_compiled_path(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "tiny", "--parts", "autoencoder", "--paths", "fp32,compile", "--rounds", "1",
                 "--calls", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    rows = {row["path"]: row for row in report["rows"]}
    assert rows["compile"]["compiled"] and not rows["fp32"]["compiled"]
    assert rows["fp32"]["speedup_vs_first_path"] == 1.0 and rows["compile"]["speedup_vs_first_path"] > 0
    table = capsys.readouterr().out
    assert "decoder/tiny/8px" in table and "compile" in table and f"wrote {out}" in table


@pytest.mark.parametrize("argv, message", [
    (["bench", "tiny", "--paths", "fp32,turbo"], "unknown speed switch 'turbo' in 'turbo'"),
    (["bench", "nowhere"], "unknown bench target 'nowhere'"),
    (["bench", "tiny", "--parts", "train,inference"], "unknown bench part 'inference'; known: train, decoder-train"),
    (["bench", "tiny", "--rounds", "0"], "--rounds = 0: must be at least 1"),
    (["bench", "tiny", "--paths", "fp32+bf16"], "speed path 'fp32+bf16' asks for both fp32 and bf16"),
    (["bench", "tiny", "--parts", "train", "--train-batch", "5", "--micro-batch", "2"],
     "the train batch 5 is not a multiple of the micro-batch 2"),
    (["bench", "tiny", "--paths", "attn=fast"], "unknown attention kernel in 'attn=fast'"),
])
def test_bad_input_is_one_line(argv, message, capsys):
    assert main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and "\n" not in error


def test_mfu_is_against_the_peak_of_the_paths_precision(monkeypatch):
    monkeypatch.setattr("raedit.jobs.bench.device_name", lambda device: "NVIDIA H200")
    report = run_bench(BenchConfig("tiny", parts=("train",), paths=("fp32", "bf16"), rounds=1, calls=1, warmup=0))
    fp32, bf16 = report["rows"]
    assert fp32["mfu"] == pytest.approx(fp32["achieved_tflops"] / 494.7)  # TF32 tensor cores
    assert bf16["mfu"] == pytest.approx(bf16["achieved_tflops"] / 989.4)
    assert report["peak_tflops"] == {"bf16": 989.4, "fp32": 494.7}


def test_the_released_dinov2_architecture_with_random_weights_counts_as_the_analytic_flops():
    with torch.device("meta"):
        encoder = Dinov2Encoder.with_random_weights(get_spec("dinov2-s"), 224)
        images = torch.rand(1, 3, 224, 224)
        with torch.no_grad():
            assert encoder.encode(images).shape == (1, 256, 384)
            assert counted_flops(lambda: encoder.encode(images)) == encoder_flops("dinov2-s", 224)


def test_a_stage2_recipe_is_a_target():
    target = resolve_target("stage2/imagenet256_ditdh-xl")
    assert target.denoiser.latent_shape == (768, 16, 16) and target.denoiser.width == 1152
    assert target.train_batch == 1024 and target.autoencoders == []


def test_speed_paths_parse_and_name_themselves():
    path = SpeedPath.parse("compile+bf16+attn=math")
    assert (path.bf16, path.checkpointing, path.attention) == (True, False, "math")
    assert path.name == "bf16+compile+attn=math" and path.precision == "bf16" and path.compile == "model"
    assert SpeedPath.parse("compile-blocks+ckpt").name == "compile-blocks+ckpt"
    assert SpeedPath.parse("fp32") == SpeedPath() and SpeedPath().name == "fp32"
    with pytest.raises(RaeditError, match="unknown speed switch 'fast'"):
        SpeedPath.parse("bf16+fast")


def test_peaks_by_device_name():
    assert peak_tflops("NVIDIA H200", "bf16") == 989.4
    assert peak_tflops("NVIDIA H100 PCIe", "bf16") == 756.0
    assert peak_tflops("NVIDIA H100 80GB HBM3", "fp32") == 494.7  # TF32
    assert peak_tflops("NVIDIA H100 80GB HBM3", "fp32", tf32=False) == 66.9
    assert peak_tflops("cpu", "bf16") is None


def test_a_speedup_is_the_median_of_the_per_round_ratios():
    baseline = PathTimes("fp32", 1.0, [2.0, 4.0, 3.0])
    faster = PathTimes("bf16", 1.0, [1.0, 1.0, 3.0])  # ratios 2, 4, 1
    assert speedup_over(baseline, faster) == 2.0
    assert baseline.median_s == 3.0


def test_the_gpu_script_runs_end_to_end_in_its_dry_mode(tmp_path):
    out = tmp_path / "gpu.json"
    result = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh"), "--dry", str(out)], capture_output=True,
                            text=True, timeout=600, env={**os.environ, "PYTHON": sys.executable})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["dry"] and report["missing"] == [] and report["device"] == "cpu"
    assert list(report["parts"]) == ["ditdh-xl-train-fp32", "ditdh-xl-train-bf16-compile", "dit-xl-train-fp32",
                                     "dit-xl-train-bf16-compile", "decoder-xl-train", "sample-ag-bf16-compile",
                                     "sample-ag-fp32"]
    paths = {name: [row["path"] for row in part["rows"]] for name, part in report["parts"].items()}
    assert paths["decoder-xl-train"] == ["fp32", "bf16+compile-blocks"] and paths["sample-ag-fp32"] == ["fp32"]
    assert all(row["compiled"] for part in report["parts"].values() for row in part["rows"]
               if "compile" in row["path"])
    targets = report["targets"]
    hours = targets["hours_for_50k_ag_samples_bf16_compile"]  # the tiny models' speed: depends on the machine's load
    assert hours > 0 and targets["hours_for_50k_met_bf16_compile"] is (hours < targets["hours_for_50k_target"])
    assert targets["ditdh_xl_train_bf16_compile_mfu"] is None  # no known peak on a CPU
