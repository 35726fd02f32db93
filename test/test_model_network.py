"""The network against the reference fixtures, at every stored level, plus what the
fixtures cannot tell apart (views of different grids, batching).

Tolerance (fixture README, tiny fixtures, float32): |a - b| <= 1e-5 + 1e-4 * |b|.
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mast3r_ros.model.checkpoint import load_model
from mast3r_ros.model.network import (
    Mast3rConfig,
    Mast3rNet,
    apply_rope,
    count_parameters,
    rope_tables,
    token_positions,
)

ATOL, RTOL = 1e-5, 1e-4
PRED_KEYS = ("pts3d", "conf", "desc", "desc_conf")
pytestmark = pytest.mark.usefixtures("one_torch_thread")



def assert_close(name: str, a: torch.Tensor, b: np.ndarray, atol: float = ATOL, rtol: float = RTOL) -> None:
    a = a.detach().float().cpu().numpy()
    assert a.shape == b.shape, f"{name}: shape {a.shape} vs reference {b.shape}"
    err = np.abs(a - b) - (atol + rtol * np.abs(b))
    worst = np.unravel_index(np.argmax(err), err.shape)
    assert err.max() <= 0, (f"{name}: |diff| {abs(a[worst] - b[worst]):.3g} at {worst} exceeds "
                            f"{atol} + {rtol}*|{b[worst]:.4g}|")


def ref_key(view: int, key: str) -> str:
    return "pts3d_in_other_view" if (view == 2 and key == "pts3d") else key


# ----------------------------------------------------------------------------- config
def test_config_defaults_are_official_vitl():
    c = Mast3rConfig()
    assert (c.enc_embed_dim, c.enc_depth, c.enc_num_heads) == (1024, 24, 16)
    assert (c.dec_embed_dim, c.dec_depth, c.dec_num_heads) == (768, 12, 12)
    assert (c.patch_size, c.rope_base, c.mlp_ratio, c.layernorm_eps) == (16, 100.0, 4.0, 1e-6)
    assert (c.dpt_feature_dim, c.dpt_last_dim, c.dpt_layer_dims) == (256, 128, (96, 192, 384, 768))
    assert c.desc_mlp_hidden_dim == 7168 and c.dpt_hooks == (0, 6, 9, 12)


def test_config_from_dict_rejects_unknown_keys():
    with pytest.raises(ValueError, match=r"unknown Mast3rConfig key\(s\) \['enc_dpth'\]; valid keys are .*enc_depth"):
        Mast3rConfig.from_dict({"enc_dpth": 3})
    c = Mast3rConfig.from_dict({"enc_depth": 3, "dpt_layer_dims": [1, 2, 3, 4]})
    assert c.enc_depth == 3 and c.dpt_layer_dims == (1, 2, 3, 4)
    assert Mast3rConfig.from_dict(c.to_dict()) == c
    with pytest.raises(Exception):
        c.enc_depth = 4  # frozen


@pytest.mark.parametrize("bad, match", [
    ({"enc_num_heads": 5}, "head dim divisible by 4"),
    ({"dec_num_heads": 128}, "head dim divisible by 4"),
    ({"patch_size": 14}, "patch_size must be 16"),
    ({"dpt_layer_dims": (1, 2, 3)}, "4 entries"),
    ({"desc_mlp_hidden_dim_factor": 0.0}, "empty descriptor MLP"),
])
def test_config_validation(bad, match):
    with pytest.raises(ValueError, match=match):
        Mast3rConfig(**bad)


# ----------------------------------------------------------------------------- ViT-L layout
def test_vitl_state_dict_matches_official_manifest(reference_dir: Path):
    """Our ViT-L (meta device, no weights) has exactly the 1017 official keys and shapes,
    in the same order, and the official parameter counts."""
    manifest = json.loads((reference_dir / "mast3r_vitl_checkpoint_manifest.json").read_text())
    with torch.device("meta"):
        model = Mast3rNet(Mast3rConfig())
    ours = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    theirs = [(e["key"], e["shape"]) for e in manifest["state_dict"]]
    assert len(ours) == manifest["n_state_dict_entries"] == 1017
    assert dict(ours) == dict(theirs)
    assert ours == theirs  # same order too
    assert count_parameters(model) == manifest["total_params_unique"]
    assert sum(math.prod(s) for _, s in ours) == manifest["total_elements_over_all_entries_incl_aliases"]
    assert list(model.cfg.dpt_hooks) == manifest["dpt_hooks"]


def test_tiny_state_dict_matches_public_fixture(reference_dir: Path):
    fixture = json.loads((reference_dir / "public" / "fixture.json").read_text())
    with torch.device("meta"):
        model = Mast3rNet(Mast3rConfig.tiny())
    assert [(k, list(v.shape)) for k, v in model.state_dict().items()] == [
        (e["key"], e["shape"]) for e in fixture["state_dict"]]
    assert count_parameters(model) == fixture["total_params_unique"]


# ----------------------------------------------------------------------------- RoPE unit
def test_rope_rotates_halves_by_row_and_column():
    """Head vector [y-half | x-half]; within a half, element j pairs with j + D/2."""
    cos, sin = rope_tables(2, 3, head_dim=8, base=100.0)
    assert cos.shape == (6, 8)
    t = torch.zeros(1, 1, 6, 8)
    t[..., 0] = 1.0  # first element of the y half
    out = apply_rope(t, cos, sin)
    rows = token_positions(2, 3)[:, 0].float()
    # angle of frequency 0 is the row itself: (cos r, sin r) lands in elements 0 and 2
    torch.testing.assert_close(out[0, 0, :, 0], rows.cos())
    torch.testing.assert_close(out[0, 0, :, 2], rows.sin())
    assert out[..., 4:].abs().max() == 0  # x half untouched
    # norm preserved
    t = torch.randn(2, 3, 6, 8)
    torch.testing.assert_close(apply_rope(t, cos, sin).norm(dim=-1), t.norm(dim=-1))


# ----------------------------------------------------------------------------- public fixture
@pytest.fixture(scope="module")
def public(reference_dir: Path):
    return np.load(reference_dir / "public" / "reference_outputs.npz")


@pytest.fixture(scope="module")
def tiny_safetensors_dir(reference_dir: Path, tmp_path_factory) -> Path:
    """The public .safetensors as it is (no alias keys), with a hub-style config.json beside
    it: the reference constructor kwargs plus the fixture's head overrides."""
    d = tmp_path_factory.mktemp("tiny_st")
    shutil.copy(reference_dir / "public" / "mast3r_tiny_public.safetensors", d / "model.safetensors")
    fixture = json.loads((reference_dir / "public" / "fixture.json").read_text())
    cfg = dict(fixture["constructor_kwargs"])
    cfg["fixture_head_overrides"] = {k: v[0] for k, v in fixture["head_constant_overrides"].items()
                                     if not k.startswith("_")}
    (d / "config.json").write_text(json.dumps(cfg))
    return d


@pytest.fixture(scope="module", params=["pth", "safetensors"])
def tiny_model(request, reference_dir: Path, tiny_safetensors_dir: Path) -> Mast3rNet:
    if request.param == "pth":
        return load_model(reference_dir / "public" / "mast3r_tiny_public.pth")
    return load_model(tiny_safetensors_dir / "model.safetensors")


@pytest.mark.parametrize("pair", [0, 1])
def test_public_fixture_every_level(tiny_model: Mast3rNet, public, pair: int):
    """Encoder tokens, every decoder layer, raw head output (pair 0 only: stored) and final
    outputs equal the reference run, from the .pth and from the .safetensors."""
    p = f"pair{pair}_"
    img1, img2 = (torch.from_numpy(public[p + f"view{v}_img"]) for v in (1, 2))
    with torch.inference_mode():
        out = tiny_model(img1, img2)
    for v, enc, dec in ((1, out.enc1, out.dec1), (2, out.enc2, out.dec2)):
        assert_close(f"{p}view{v}_enc_tokens", enc, public[p + f"view{v}_enc_tokens"])
        ref = public[p + f"view{v}_dec_tokens"]
        assert len(dec) == ref.shape[0] == 10
        for layer in range(len(dec)):
            assert_close(f"{p}view{v}_dec layer {layer + 1}", dec[layer], ref[layer])
        h, w = img1.shape[-2] // 16, img1.shape[-1] // 16
        np.testing.assert_array_equal(token_positions(h, w).numpy(), public[p + f"view{v}_pos"][0])
    if pair == 0:
        assert_close("view1_head_raw", out.raw1, public["pair0_view1_head_raw"])
        assert_close("view2_head_raw", out.raw2, public["pair0_view2_head_raw"])
    for v, pred in ((1, out.view1), (2, out.view2)):
        for k in PRED_KEYS:
            assert_close(f"{p}view{v}_{k}", getattr(pred, k), public[p + f"view{v}_{ref_key(v, k)}"])


def test_public_heads_from_stored_tokens(tiny_model: Mast3rNet, public):
    """The heads alone, fed the reference's stored tokens, give the stored raw output."""
    toks = lambda v: [torch.from_numpy(public[f"pair0_view{v}_enc_tokens"])] + [  # noqa: E731
        torch.from_numpy(t) for t in public[f"pair0_view{v}_dec_tokens"]]
    t1, t2 = toks(1), toks(2)
    with torch.inference_mode():
        raw1, raw2 = tiny_model.heads(t1[0], t2[0], t1[1:], t2[1:], (3, 4), (3, 4))
    assert_close("raw1", raw1, public["pair0_view1_head_raw"])
    assert_close("raw2", raw2, public["pair0_view2_head_raw"])


def test_wrong_weights_fail_the_fixture(reference_dir: Path, public):
    """The comparison is sensitive: a 1e-3 change of one decoder bias breaks it."""
    model = load_model(reference_dir / "public" / "mast3r_tiny_public.pth")
    with torch.no_grad():
        model.dec_blocks2[3].mlp.fc2.bias[0] += 1e-3
    with torch.inference_mode():
        out = model(torch.from_numpy(public["pair0_view1_img"]), torch.from_numpy(public["pair0_view2_img"]))
    with pytest.raises(AssertionError):
        assert_close("dec", out.dec2[3], public["pair0_view2_dec_tokens"][3])
    assert_close("view1 dec", out.dec1[3], public["pair0_view1_dec_tokens"][3])  # not yet affected


# ----------------------------------------------------------------------------- mixed grids
def _decoder_f64(model: Mast3rNet, enc1, enc2, hw1, hw2, swap_key_positions=False):
    """Independent float64 decoder: explicit per-head loops, softmax attention and RoPE as
    rotations of (j, j + D/2) pairs, each view's own (row, col) for its tokens."""
    cfg = model.cfg
    sd = {k: v.double() for k, v in model.state_dict().items()}
    nh = cfg.dec_num_heads
    hd = cfg.dec_embed_dim // nh

    def lin(x, name):
        return x @ sd[name + ".weight"].T + sd[name + ".bias"]

    def ln(x, name):
        return torch.nn.functional.layer_norm(x, x.shape[-1:], sd[name + ".weight"], sd[name + ".bias"],
                                              cfg.layernorm_eps)

    def rope(x, hw):  # x (N, hd)
        pos = torch.tensor([(r, c) for r in range(hw[0]) for c in range(hw[1])], dtype=torch.float64)
        out = x.clone()
        half = hd // 2
        for axis, off in ((0, 0), (1, half)):
            for k in range(half // 2):
                theta = pos[:, axis] / cfg.rope_base ** (2 * k / half)
                a, b = x[:, off + k], x[:, off + k + half // 2]
                out[:, off + k] = a * theta.cos() - b * theta.sin()
                out[:, off + k + half // 2] = b * theta.cos() + a * theta.sin()
        return out

    def attention(q, k, v, hwq, hwk):  # (N, C) each
        outs = []
        for h in range(nh):
            s = slice(h * hd, (h + 1) * hd)
            qh, kh = rope(q[:, s], hwq), rope(k[:, s], hwk)
            a = torch.softmax(qh @ kh.T / math.sqrt(hd), dim=-1)
            outs.append(a @ v[:, s])
        return torch.cat(outs, dim=-1)

    def block(p, x, y, hwx, hwy):
        xn = ln(x, p + ".norm1")
        q, k, v = lin(xn, p + ".attn.qkv").chunk(3, dim=-1)
        x = x + lin(attention(q, k, v, hwx, hwx), p + ".attn.proj")
        yn = ln(y, p + ".norm_y")
        xn = ln(x, p + ".norm2")
        q, k, v = lin(xn, p + ".cross_attn.projq"), lin(yn, p + ".cross_attn.projk"), lin(yn, p + ".cross_attn.projv")
        x = x + lin(attention(q, k, v, hwx, hwx if swap_key_positions else hwy), p + ".cross_attn.proj")
        hid = torch.nn.functional.gelu(lin(ln(x, p + ".norm3"), p + ".mlp.fc1"))
        return x + lin(hid, p + ".mlp.fc2")

    f1, f2 = lin(enc1[0].double(), "decoder_embed"), lin(enc2[0].double(), "decoder_embed")
    out1, out2 = [], []
    for i in range(cfg.dec_depth):
        f1, f2 = block(f"dec_blocks.{i}", f1, f2, hw1, hw2), block(f"dec_blocks2.{i}", f2, f1, hw2, hw1)
        out1.append(f1)
        out2.append(f2)
    out1[-1], out2[-1] = ln(out1[-1], "dec_norm"), ln(out2[-1], "dec_norm")
    return out1, out2


@pytest.fixture(scope="module")
def pth_model(reference_dir: Path) -> Mast3rNet:
    return load_model(reference_dir / "public" / "mast3r_tiny_public.pth")


def test_portrait_with_landscape_matches_independent_float64(pth_model: Mast3rNet, public):
    """Portrait 64x48 (4x3 tokens) with landscape 48x64 (3x4): the same token count, so
    using the wrong view's positions would run silently. Compare every decoder layer with
    an independent float64 computation; check the same computation with the key positions
    swapped differs by far more than the tolerance (so the test can fail)."""
    img1 = torch.from_numpy(public["pair0_view1_img"]).transpose(-1, -2).flip(-1).contiguous()  # 64x48
    img2 = torch.from_numpy(public["pair0_view2_img"])  # 48x64
    with torch.inference_mode():
        out = pth_model(img1, img2)
    assert out.view1.pts3d.shape == (1, 64, 48, 3) and out.view2.pts3d.shape == (1, 48, 64, 3)
    assert out.view1.desc.shape == (1, 64, 48, 24) and out.view2.conf.shape == (1, 48, 64)
    ref1, ref2 = _decoder_f64(pth_model, out.enc1, out.enc2, (4, 3), (3, 4))
    for layer in range(len(ref1)):
        assert_close(f"view1 layer {layer + 1}", out.dec1[layer][0], ref1[layer].numpy())
        assert_close(f"view2 layer {layer + 1}", out.dec2[layer][0], ref2[layer].numpy())
    wrong1, _ = _decoder_f64(pth_model, out.enc1, out.enc2, (4, 3), (3, 4), swap_key_positions=True)
    assert (out.dec1[-1][0].double() - wrong1[-1]).abs().max() > 1e-3
    # heads are per view: the outputs equal the heads run on each view's float64 tokens
    for v in (out.view1, out.view2):
        assert torch.isfinite(v.pts3d).all() and (v.conf >= 1).all() and (v.desc_conf > 0).all()
        torch.testing.assert_close(v.desc.norm(dim=-1), torch.ones_like(v.conf))


def test_mixed_sizes_with_different_token_counts(pth_model: Mast3rNet, public):
    """64x48 with 32x80 (12 vs 10 tokens, odd widths) runs and equals the float64 decoder."""
    g = torch.Generator().manual_seed(3)
    img1 = torch.rand(1, 3, 64, 48, generator=g) * 2 - 1
    img2 = torch.rand(1, 3, 32, 80, generator=g) * 2 - 1
    with torch.inference_mode():
        out = pth_model(img1, img2)
    assert out.view1.pts3d.shape == (1, 64, 48, 3) and out.view2.pts3d.shape == (1, 32, 80, 3)
    ref1, ref2 = _decoder_f64(pth_model, out.enc1, out.enc2, (4, 3), (2, 5))
    assert_close("view1 last", out.dec1[-1][0], ref1[-1].numpy())
    assert_close("view2 last", out.dec2[-1][0], ref2[-1].numpy())


def test_batch_equals_one_by_one(pth_model: Mast3rNet, public):
    """Both public pairs in one batch of 2 equal the single-pair runs (reference: <= 2.4e-7)."""
    imgs = [[torch.from_numpy(public[f"pair{p}_view{v}_img"]) for v in (1, 2)] for p in (0, 1)]
    with torch.inference_mode():
        batched = pth_model(torch.cat([imgs[0][0], imgs[1][0]]), torch.cat([imgs[0][1], imgs[1][1]]))
        single = [pth_model(*imgs[p]) for p in (0, 1)]
    for p in (0, 1):
        for name in ("view1", "view2"):
            for k in PRED_KEYS:
                a = getattr(getattr(batched, name), k)[p]
                b = getattr(getattr(single[p], name), k)[0]
                assert_close(f"pair{p} {name} {k}", a, b.numpy())
