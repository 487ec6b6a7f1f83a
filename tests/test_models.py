"""LightningDiT and DiT^DH: official parameter counts and key layout, the official function, RoPE and position
embeddings, adaLN-Zero, label dropout, the width warning."""

import json
import math
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from raedit.core.errors import RaeditError
from raedit.interop.official_dit import backbone_depth, official_dit_to_raedit, official_to_raedit
from raedit.models import DiTConfig, DiTDH, DiTDHConfig, LightningDiT, build_model, model_config
from raedit.models.blocks import LabelEmbedder
from raedit.models.positions import RotaryEmbedding2D, sincos_position_embedding_2d

# Key names and shapes of the released checkpoints (copied from shared/reference/official-rae).
OFFICIAL = Path(__file__).resolve().parent / "data" / "official-rae"
DINOV2_B_LATENT = (768, 16, 16)


def official_entry(name: str) -> dict:
    return json.loads((OFFICIAL / f"{name}.json").read_text())


@pytest.mark.parametrize("model_name, official_name", [("ditdh-xl", "DiTDH-XL"), ("ditdh-s", "DiTDH-S")])
def test_ditdh_matches_released_checkpoint_layout_and_parameter_count(model_name, official_name):
    official = official_entry(official_name)
    with torch.device("meta"):
        model = build_model(model_config(model_name, DINOV2_B_LATENT))
    # Frozen pos_embed and time frequencies W count, RoPE buffers don't: the official count.
    assert sum(p.numel() for p in model.parameters()) == official["num_params"]
    official_shapes = {key: torch.empty(shape, device="meta") for key, shape in official["state_dict"].items()}
    renamed = {key: tuple(value.shape) for key, value in official_to_raedit(official_shapes).items()}
    ours = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    assert renamed == ours
    assert backbone_depth(official_shapes) == {"ditdh-xl": 28, "ditdh-s": 12}[model_name]


def test_official_counts_are_the_papers():
    assert official_entry("DiTDH-XL")["num_params"] == 838_675_796
    assert official_entry("DiTDH-S")["num_params"] == 196_455_764


# --- The official function, written out from the official DiTwDDTHead on its own key names ---------------------


def official_rope_tables(head_dim: int, side: int, theta: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """EVA-02 VisionRotaryEmbeddingFast(dim=head_dim // 2, pt_seq_len=side) as the official code builds it."""
    dim = head_dim // 2
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim))
    positions = torch.arange(side) / side * side
    angles = torch.einsum("i,f->if", positions, freqs).repeat_interleave(2, dim=-1)  # (side, dim), pairs repeated
    grid = torch.cat(
        [angles[:, None, :].expand(side, side, dim), angles[None, :, :].expand(side, side, dim)], dim=-1
    ).reshape(side * side, head_dim)
    return grid.cos(), grid.sin()


def ref_linear(sd, v, name):
    return v @ sd[f"{name}.weight"].T + sd[f"{name}.bias"]


def ref_rmsnorm(sd, v, name):
    return v * torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + 1e-6) * sd[f"{name}.weight"]


def ref_rope(sd, v, name):
    pairs = v.reshape(*v.shape[:-1], -1, 2)
    rotated = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).reshape(v.shape)
    return v * sd[f"{name}.freqs_cos"] + rotated * sd[f"{name}.freqs_sin"]


def ref_block(sd, v, cond, index, heads, rope_name):
    p = f"blocks.{index}"
    if cond.dim() == 2:
        cond = cond[:, None]
    shift1, scale1, gate1, shift2, scale2, gate2 = ref_linear(sd, F.silu(cond), f"{p}.adaLN_modulation.1").chunk(6, -1)
    b, n, d = v.shape
    h = ref_rmsnorm(sd, v, f"{p}.norm1") * (1 + scale1) + shift1
    q, k, val = ref_linear(sd, h, f"{p}.attn.qkv").reshape(b, n, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
    q, k = ref_rope(sd, q, rope_name), ref_rope(sd, k, rope_name)
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // heads), dim=-1)
    attended = (weights @ val).transpose(1, 2).reshape(b, n, d)
    v = v + gate1 * ref_linear(sd, attended, f"{p}.attn.proj")
    h = ref_rmsnorm(sd, v, f"{p}.norm2") * (1 + scale2) + shift2
    a, g = ref_linear(sd, h, f"{p}.mlp.w12").chunk(2, -1)
    return v + gate2 * ref_linear(sd, F.silu(a) * g, f"{p}.mlp.w3")


def ref_patch_embed(sd, x, name):
    return F.conv2d(x, sd[f"{name}.proj.weight"], sd[f"{name}.proj.bias"]).flatten(2).transpose(1, 2)


def ref_time_embed(sd, t):
    angles = t[:, None] * sd["t_embedder.W"][None] * 2 * math.pi
    hidden = F.silu(ref_linear(sd, torch.cat([angles.sin(), angles.cos()], -1), "t_embedder.mlp.0"))
    return ref_linear(sd, hidden, "t_embedder.mlp.2")


def ref_final_layer(sd, h, cond, x):
    if cond.dim() == 2:
        cond = cond[:, None]
    shift, scale = ref_linear(sd, F.silu(cond), "final_layer.adaLN_modulation.1").chunk(2, -1)
    out = ref_linear(sd, ref_rmsnorm(sd, h, "final_layer.norm_final") * (1 + scale) + shift, "final_layer.linear")
    side = x.shape[-1]
    return out.reshape(x.shape[0], side, side, -1).permute(0, 3, 1, 2)


def official_ditdh_forward(sd, x, t, y, heads_backbone, heads_head):
    """The official DiTwDDTHead.forward (eval mode) on its own key names."""
    depth = backbone_depth(sd)
    total = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    t_emb = ref_time_embed(sd, t)
    c = F.silu(t_emb + sd["y_embedder.embedding_table.weight"][y])
    s = ref_patch_embed(sd, x, "s_embedder") + sd["pos_embed"]
    for i in range(depth):
        s = ref_block(sd, s, c, i, heads_backbone, "enc_feat_rope")
    s = ref_linear(sd, F.silu(t_emb[:, None] + s), "s_projector")
    h = ref_patch_embed(sd, x, "x_embedder")
    for i in range(depth, total):
        h = ref_block(sd, h, s, i, heads_head, "dec_feat_rope")
    return ref_final_layer(sd, h, s, x)


def official_lightningdit_forward(sd, x, t, y, heads):
    """The official LightningDiT.forward (eval mode) on its own key names: c = t_emb + y_emb, no extra SiLU."""
    c = ref_time_embed(sd, t) + sd["y_embedder.embedding_table.weight"][y]
    h = ref_patch_embed(sd, x, "x_embedder") + sd["pos_embed"]
    for i in range(len({k.split(".")[1] for k in sd if k.startswith("blocks.")})):
        h = ref_block(sd, h, c, i, heads, "feat_rope")
    return ref_final_layer(sd, h, c, x)


def to_official_keys(state_dict, depth):
    """Inverse of the rename table, for a model built here."""
    prefixes = {
        "backbone_embedder.": "s_embedder.",
        "head_embedder.": "x_embedder.",
        "head_projector.": "s_projector.",
        "backbone_rope.": "enc_feat_rope.",
        "head_rope.": "dec_feat_rope.",
    }
    official = {}
    for key, value in state_dict.items():
        if key.startswith("head_blocks."):
            _, index, rest = key.split(".", 2)
            key = f"blocks.{int(index) + depth}.{rest}"
        for ours, theirs in prefixes.items():
            if key.startswith(ours):
                key = theirs + key[len(ours) :]
        official[key] = value
    return official


def small_ditdh(**kwargs) -> DiTDH:
    config = dict(depth=2, width=32, num_heads=2, head_depth=2, head_width=48, head_num_heads=2, num_classes=5)
    config.update(kwargs)
    return DiTDH(DiTDHConfig((8, 4, 4), **config))


def randomize(model: torch.nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name != "pos_embed":
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)


def test_official_weights_compute_the_official_function():
    torch.manual_seed(0)
    source = small_ditdh()
    randomize(source, seed=1)
    official = to_official_keys(source.state_dict(), depth=2)
    # The RoPE tables and position embedding we build are the official ones.
    for name, head_dim in [("enc_feat_rope", 16), ("dec_feat_rope", 24)]:
        cos, sin = official_rope_tables(head_dim, 4)
        torch.testing.assert_close(official[f"{name}.freqs_cos"], cos)
        torch.testing.assert_close(official[f"{name}.freqs_sin"], sin)

    target = small_ditdh().eval()
    target.load_state_dict(official_to_raedit(official), strict=True)
    x = torch.randn(3, 8, 4, 4)
    t = torch.tensor([0.1, 0.5, 0.9])
    y = torch.tensor([0, 4, 5])  # 5 is the null class
    with torch.no_grad():
        expected = official_ditdh_forward(official, x, t, y, heads_backbone=2, heads_head=2)
        got = target(x, t, y)
    assert got.abs().mean() > 0.1
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_official_lightningdit_weights_compute_the_official_function():
    torch.manual_seed(0)
    source = LightningDiT(DiTConfig((8, 4, 4), depth=2, width=32, num_heads=2, num_classes=5))
    randomize(source, seed=3)
    official = {("feat_" + key if key.startswith("rope.") else key): v for key, v in source.state_dict().items()}
    cos, sin = official_rope_tables(16, 4)
    torch.testing.assert_close(official["feat_rope.freqs_cos"], cos)
    target = LightningDiT(DiTConfig((8, 4, 4), depth=2, width=32, num_heads=2, num_classes=5)).eval()
    target.load_state_dict(official_dit_to_raedit(official), strict=True)
    x, t, y = torch.randn(2, 8, 4, 4), torch.tensor([0.2, 0.7]), torch.tensor([1, 5])
    with torch.no_grad():
        expected = official_lightningdit_forward(official, x, t, y, heads=2)
        got = target(x, t, y)
    assert got.abs().mean() > 0.1
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


# --- Building blocks --------------------------------------------------------------------------------------------


def test_rope_scores_depend_only_on_the_2d_offset():
    rope = RotaryEmbedding2D(head_dim=16, grid=(5, 6))
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(16, generator=generator).expand(1, 1, 30, 16)
    k = torch.randn(16, generator=generator).expand(1, 1, 30, 16)
    scores = (rope(q)[0, 0] @ rope(k)[0, 0].T).reshape(5, 6, 5, 6)  # [row_q, col_q, row_k, col_k]
    # Same offset (1, 2), different absolute positions: same score; a different offset: another score.
    assert torch.allclose(scores[0, 0, 1, 2], scores[3, 3, 4, 5], atol=1e-5)
    assert torch.allclose(scores[2, 1, 1, 4], scores[4, 2, 3, 5], atol=1e-5)
    assert not torch.allclose(scores[0, 0, 1, 2], scores[0, 0, 2, 1], atol=1e-3)
    # Rows rotate the first half of the head, columns the second; pairs share a frequency.
    table = rope.freqs_cos.reshape(5, 6, 16)
    assert torch.allclose(table[2, 3, 0], torch.cos(torch.tensor(2.0)))
    assert torch.allclose(table[2, 3, 8], torch.cos(torch.tensor(3.0)))
    assert torch.allclose(table[2, 3, 2], torch.cos(torch.tensor(2.0 * 10000 ** (-2 / 8))))
    assert torch.equal(table[..., 0::2], table[..., 1::2])


def test_sincos_position_embedding_layout():
    embed = sincos_position_embedding_2d(16, (3, 5)).reshape(3, 5, 16)
    row, col = 2, 4
    assert torch.allclose(embed[row, col, 0], torch.sin(torch.tensor(float(col))))
    assert torch.allclose(embed[row, col, 4], torch.cos(torch.tensor(float(col))))
    assert torch.allclose(embed[row, col, 8], torch.sin(torch.tensor(float(row))))
    assert torch.allclose(embed[row, col, 9], torch.sin(torch.tensor(row * 10000 ** (-1 / 4))))


def test_label_dropout_rate_and_null_class():
    embedder = LabelEmbedder(num_classes=10, dim=4, dropout_prob=0.1)
    labels = torch.randint(0, 10, (20000,))
    with torch.no_grad():
        out = embedder(labels, train=True)
        null = embedder.embedding_table.weight[10]
        dropped = (out == null).all(dim=1).float().mean().item()
        assert 0.09 < dropped < 0.11
        assert torch.equal(embedder(labels, train=False), embedder.embedding_table.weight[labels])


@pytest.mark.parametrize("family", ["dit", "ditdh"])
def test_models_start_at_zero_velocity_and_learn_class_dependence(family):
    torch.manual_seed(0)
    if family == "dit":
        model = LightningDiT(DiTConfig((8, 4, 4), depth=2, width=32, num_heads=2, num_classes=5))
    else:
        model = small_ditdh()
    x, t = torch.randn(2, 8, 4, 4), torch.tensor([0.3, 0.7])
    with torch.no_grad():
        assert torch.equal(model(x, t, torch.tensor([0, 1])), torch.zeros_like(x))  # adaLN-Zero
    randomize(model, seed=2)
    model.eval()
    with torch.no_grad():
        v0, v1 = model(x, t, torch.tensor([0, 0])), model(x, t, torch.tensor([1, 1]))
        assert v0.shape == x.shape
        assert (v0 - v1).abs().mean() > 1e-2
        torch.testing.assert_close(model(x[:1], t[:1], torch.tensor([0])), v0[:1], rtol=1e-4, atol=1e-5)
    assert model.null_label == 5


def test_frozen_parameters_are_time_frequencies_and_positions():
    model = small_ditdh()
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {"pos_embed", "t_embedder.W"}
    assert model.t_embedder.W.shape == (256,)
    assert set(model.state_dict()) - {n for n, _ in model.named_parameters()} == {
        "backbone_rope.freqs_cos",
        "backbone_rope.freqs_sin",
        "head_rope.freqs_cos",
        "head_rope.freqs_sin",
    }


def test_qk_norm_adds_per_head_rmsnorm():
    model = LightningDiT(DiTConfig((8, 4, 4), depth=1, width=32, num_heads=2, num_classes=5, qk_norm=True))
    assert model.state_dict()["blocks.0.attn.q_norm.weight"].shape == (16,)
    assert model.state_dict()["blocks.0.attn.k_norm.weight"].shape == (16,)


def test_width_below_latent_channels_warns_citing_the_width_rule():
    with pytest.warns(UserWarning, match=r"Sec\. 4\.1"):
        LightningDiT(DiTConfig((64, 2, 2), depth=1, width=32, num_heads=2, num_classes=1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LightningDiT(DiTConfig((32, 2, 2), depth=1, width=32, num_heads=2, num_classes=1))
        # DiT^DH-S: a narrow backbone is fine, the wide head produces the output.
        with torch.device("meta"):
            model_config("ditdh-s", DINOV2_B_LATENT)
    with pytest.warns(UserWarning, match="head width 48"):
        DiTDH(DiTDHConfig((64, 4, 4), depth=1, width=32, num_heads=2, head_depth=1, head_width=48, head_num_heads=2,
                          num_classes=1))


def test_sizes_and_bad_input():
    with torch.device("meta"):
        model = build_model(model_config("dit-b", (32, 4, 4), num_classes=10))
    assert (len(model.blocks), model.pos_embed.shape[-1], model.blocks[0].attn.num_heads) == (12, 768, 12)
    with pytest.raises(RaeditError, match="unknown model"):
        model_config("ditdh-xxl", (8, 4, 4))
    with pytest.raises(RaeditError, match="bad arguments"):
        model_config("dit-s", (8, 4, 4), head_width=32)
    model = small_ditdh()
    with pytest.raises(RaeditError, match=r"\(B, 8, 4, 4\)"):
        model(torch.zeros(1, 8, 2, 2), torch.zeros(1), torch.zeros(1, dtype=torch.long))
