"""The official ViT-L architecture with the fixture's formula weights (RNG-free, exact in
float32) against the reference run at 48x64.

Tolerance (fixture README, vitl_formula): |a - b| <= 1e-4 * max|b| (per key) + 1e-3 * |b|.
Heavy (688M parameters, ~2.8 GB): the weights are generated once per module with a
vectorised uint32 version of ``formula_weights.py`` (checked against it and against the
fixture's sha256 of every tensor).
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from mast3r_ros.model.checkpoint import Checkpoint, build_model
from mast3r_ros.model.network import Mast3rConfig, Mast3rNet

pytestmark = [pytest.mark.slow, pytest.mark.reference]


def _fnv1a32(s: str) -> int:
    h = 0x811C9DC5
    for b in s.encode("utf-8"):
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


def formula_tensor_fast(key: str, shape) -> np.ndarray:
    """The fixture's formula (see its README) with wrapping uint32 arithmetic, in place."""
    shape = tuple(int(s) for s in shape)
    n = math.prod(shape)
    x = np.arange(n, dtype=np.uint32)
    x *= np.uint32(0x9E3779B9)
    x += np.uint32(_fnv1a32(key))
    x ^= x >> np.uint32(16)
    x *= np.uint32(0x7FEB352D)
    x ^= x >> np.uint32(15)
    x *= np.uint32(0x846CA68B)
    x ^= x >> np.uint32(16)
    x >>= np.uint32(16)
    v = x.astype(np.float32)
    v -= np.float32(32768)  # u = v / 2^15, exact
    if len(shape) >= 2:
        e = max(math.ceil(math.log2(n // shape[0]) / 2) - 1, 0)
        v *= np.float32(2.0 ** (-15 - e))
    elif key.endswith(".weight"):
        v *= np.float32(2.0 ** -18)  # 1 + u/8
        v += np.float32(1.0)
    elif key.endswith(".bias"):
        v *= np.float32(2.0 ** -19)  # u/16
    else:
        raise ValueError(key)
    return v.reshape(shape)


def _canonical(key: str) -> str:
    import re

    return re.sub(r"\.scratch\.layer_rn\.(\d)\.", lambda m: f".scratch.layer{int(m.group(1)) + 1}_rn.", key)


@pytest.fixture(scope="module")
def vitl(reference_dir: Path):
    """(model, reference npz, fixture json) with the formula weights, built once."""
    n_threads = torch.get_num_threads()
    torch.set_num_threads(2)
    folder = reference_dir / "vitl_formula"
    fixture = json.loads((folder / "fixture.json").read_text())
    manifest = json.loads((reference_dir / "mast3r_vitl_checkpoint_manifest.json").read_text())
    per_key = fixture["weights_sha256_per_key"]
    all_hash = hashlib.sha256()
    sd: dict[str, torch.Tensor] = {}
    bad = []
    for entry in manifest["state_dict"]:
        key, canon = entry["key"], _canonical(entry["key"])
        if canon not in sd:
            sd[canon] = torch.from_numpy(formula_tensor_fast(canon, entry["shape"]))
        buf = memoryview(sd[canon].numpy()).cast("B")
        all_hash.update(buf)
        if hashlib.sha256(buf).hexdigest() != per_key[key]:
            bad.append(key)
    model = build_model(Checkpoint(Mast3rConfig(), sd, "<vitl formula weights>"))
    yield model, np.load(folder / "reference_outputs.npz"), fixture, bad, all_hash.hexdigest()
    torch.set_num_threads(n_threads)


def test_fast_generator_equals_fixture_script(reference_dir: Path):
    spec = importlib.util.spec_from_file_location("formula_weights", reference_dir / "vitl_formula" / "formula_weights.py")
    fw = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fw)
    for key, shape in [("patch_embed.proj.weight", (1024, 3, 16, 16)), ("enc_blocks.3.norm1.weight", (1024,)),
                       ("dec_blocks2.1.attn.qkv.bias", (2304,)), ("mask_token", (1, 1, 768)),
                       ("downstream_head2.dpt.act_postprocess.0.1.weight", (96, 96, 4, 4))]:
        np.testing.assert_array_equal(formula_tensor_fast(key, shape), fw.formula_tensor(key, shape))


def test_formula_weights_checksums(vitl):
    _, _, fixture, bad, all_hash = vitl
    assert not bad, f"{len(bad)} tensors differ from the fixture's sha256, first {bad[:5]}"
    assert all_hash == fixture["weights_sha256_all_entries_in_state_dict_order"]


def _check(name: str, a: torch.Tensor, b: np.ndarray) -> None:
    a = a.detach().float().numpy()
    assert a.shape == b.shape, f"{name}: {a.shape} vs {b.shape}"
    tol = 1e-4 * np.abs(b).max() + 1e-3 * np.abs(b)
    excess = np.abs(a - b) - tol
    assert excess.max() <= 0, f"{name}: max |diff| {np.abs(a - b).max():.3g} exceeds tolerance (max|b| {np.abs(b).max():.3g})"


def test_vitl_formula_outputs(vitl):
    model, ref, _, _, _ = vitl
    img1, img2 = (torch.from_numpy(ref[f"pair0_view{v}_img"]) for v in (1, 2))
    with torch.inference_mode():
        out = model(img1, img2)
    stored_layers = [6, 9, 12]
    for v, enc, dec, raw in ((1, out.enc1, out.dec1, out.raw1), (2, out.enc2, out.dec2, out.raw2)):
        _check(f"view{v} enc", enc, ref[f"pair0_view{v}_enc_tokens"])
        for i, layer in enumerate(stored_layers):
            _check(f"view{v} dec layer {layer}", dec[layer - 1], ref[f"pair0_view{v}_dec_tokens"][i])
        _check(f"view{v} head_raw", raw, ref[f"pair0_view{v}_head_raw"])
    for v, pred in ((1, out.view1), (2, out.view2)):
        for k in ("pts3d", "conf", "desc", "desc_conf"):
            rk = "pts3d_in_other_view" if (v == 2 and k == "pts3d") else k
            _check(f"view{v} {k}", getattr(pred, k), ref[f"pair0_view{v}_{rk}"])


def test_vitl_meta_build_is_cheap():
    """Sanity for the benchmark path: ViT-L builds on the meta device without memory."""
    with torch.device("meta"):
        m = Mast3rNet(Mast3rConfig())
    assert all(p.is_meta for p in m.parameters())
