"""Makes tests/data/raev2/ditdh_ig_tiny.pt: RAEv2's own `DiTwDDTHeadIG` (nanovisionx/RAEv2, src/stage2/models/DDT.py)
at a tiny size with random weights, saved as RAEv2's training checkpoint saves it ({"step", "epoch", "model",
"ema", ...}), with inputs and the model's two outputs (full and base x-predictions). tests/test_raev2.py imports
the checkpoint and compares raedit's outputs with these. RAEv2's code stays out of this repository: give its
checkout, and a path where timm and einops are importable (timm's few torchvision names may come from a stub).

    git -C RAEV2_GIT_DIR archive HEAD src/stage2 | tar -x -C /tmp/raev2   # RAEv2 at 8a0d238
    pip install --no-deps --target /tmp/ref/pkgs timm einops
    python tests/data/raev2/make_ditdh_ig_fixture.py /tmp/raev2 /tmp/ref/stubs:/tmp/ref/pkgs
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import torch

OUT = Path(__file__).resolve().parent / "ditdh_ig_tiny.pt"
ARCHITECTURE = dict(input_size=2, in_channels=112, patch_size=[1, 1], hidden_size=[16, 32], depth=[9, 1],
                    num_heads=[2, 2], mlp_ratio=4.0, num_classes=10, base_model_depth=8)
CONDITION_TOKENS = SimpleNamespace(num_t_tokens=2, num_c_tokens=3)


def main(raev2_checkout: str, import_paths: str) -> None:
    sys.path[:0] = [*import_paths.split(":"), str(Path(raev2_checkout) / "src")]
    from stage2.models.DDT import DiTwDDTHeadIG

    torch.manual_seed(0)
    model = DiTwDDTHeadIG(**ARCHITECTURE, cond_arch=CONDITION_TOKENS).eval()
    with torch.no_grad():  # every weight random (the zero-initialized adaLN and output layers too), buffers kept
        for parameter in model.parameters():
            parameter.copy_(torch.randn_like(parameter) * 0.3)
    x = torch.randn(3, 112, 2, 2)  # the latents of the tests' EfficientNet-Lite0 RAE at 32 px
    t = torch.tensor([0.03, 0.4, 0.9])  # one below RAEv2's t_eps = 0.05
    labels = torch.tensor([1, 7, 10])  # 10: the null class
    with torch.no_grad():
        full, base = model(x, t, context=labels)
    state = model.state_dict()
    torch.save({"step": 0, "epoch": 0, "model": state, "ema": state, "optimizer": None, "scheduler": None,
                "inputs": {"x": x, "t": t, "labels": labels}, "outputs": {"full": full, "base": base}}, OUT)
    print(f"wrote {OUT}: {len(state)} tensors, |full| {full.abs().mean():.4f}, |base| {base.abs().mean():.4f}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
