"""Mast3rEngine (the PairEngine of the real network) and the infer / bench commands."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mast3r_ros.cli import main as cli_main
from mast3r_ros.cli.infer import OUTPUT_KEYS
from mast3r_ros.model.engine import EncoderFeatures, Mast3rEngine, resolve_dtype
from mast3r_ros.model.types import EncodedView, ImageTransform, PairEngine

pytestmark = [pytest.mark.reference, pytest.mark.usefixtures("one_torch_thread")]
ATOL, RTOL = 1e-5, 1e-4
KEYS = ("pts3d", "conf", "desc", "desc_conf")



@pytest.fixture(scope="module")
def public_dir(reference_dir: Path) -> Path:
    return reference_dir / "public"


@pytest.fixture(scope="module")
def public(public_dir: Path):
    return np.load(public_dir / "reference_outputs.npz")


@pytest.fixture(scope="module")
def engine(public_dir: Path) -> Mast3rEngine:
    return Mast3rEngine.from_checkpoint(public_dir / "mast3r_tiny_public.pth", device="cpu", resize=False)


def _image(public_dir: Path, pair: int, view: int) -> np.ndarray:
    return np.asarray(Image.open(public_dir / "images" / f"pair{pair}_view{view}.png").convert("RGB"))


def _close(name, a: torch.Tensor, b: np.ndarray, atol=ATOL, rtol=RTOL):
    a = a.detach().float().cpu().numpy()
    assert a.shape == b.shape, f"{name}: {a.shape} vs {b.shape}"
    excess = np.abs(a - b) - (atol + rtol * np.abs(b))
    assert excess.max() <= 0, f"{name}: max |diff| {np.abs(a - b).max():.3g}"


def test_engine_is_a_pair_engine(engine):
    assert isinstance(engine, PairEngine)


@pytest.mark.parametrize("pair", [0, 1])
def test_engine_on_fixture_images_matches_reference(engine, public_dir, public, pair):
    """PNG -> uint8 -> our normalisation gives exactly the tensor the reference fed, and
    encode + decode give the reference outputs."""
    imgs = [_image(public_dir, pair, v) for v in (1, 2)]
    for v, im in zip((1, 2), imgs):
        x, t = engine.preprocess(im)
        np.testing.assert_array_equal(x.numpy(), public[f"pair{pair}_view{v}_img"])
        assert t == ImageTransform.identity(48, 64)
    v1, v2 = engine.encode(imgs[0], frame_id="a"), engine.encode(imgs[1], frame_id="b")
    assert v1.frame_id == "a" and isinstance(v1.features, EncoderFeatures)
    _close("enc", v1.features.tokens, public[f"pair{pair}_view1_enc_tokens"])
    pred = engine.decode(v1, v2)
    for v, view in ((1, pred.view1), (2, pred.view2)):
        assert view.transform == ImageTransform.identity(48, 64)
        for k in KEYS:
            rk = "pts3d_in_other_view" if (v == 2 and k == "pts3d") else k
            _close(f"view{v} {k}", getattr(view, k), public[f"pair{pair}_view{v}_{rk}"][0])


def test_predictions_are_ordinary_tensors(engine, public_dir):
    """Outputs can be edited in place and used as constants in autograd (no inference tensors)."""
    pred = engine.predict(_image(public_dir, 0, 1), _image(public_dir, 0, 2))
    pts = pred.view2.pts3d
    assert not pts.is_inference() and not pts.requires_grad
    R = torch.eye(3, requires_grad=True)
    (pts @ R.T).sum().backward()
    assert R.grad is not None
    pred.view1.conf.clamp_(max=2.0)


def test_cached_encoding_reused_in_both_orders(engine, public_dir, public):
    """A keyframe encoded once is decoded as view 1 and as view 2 (tracking both ways)."""
    kf = engine.encode(_image(public_dir, 0, 1))
    new = engine.encode(_image(public_dir, 0, 2))
    tokens_before = kf.features.tokens.clone()
    forward = engine.decode(kf, new)
    backward = engine.decode(new, kf)
    assert torch.equal(kf.features.tokens, tokens_before)
    _close("fwd", forward.view1.pts3d, public["pair0_view1_pts3d"][0])
    # backward: view 1 is now the new frame; conf of the keyframe as view 2 differs from fwd
    assert backward.view1.pts3d.shape == (48, 64, 3)
    assert not torch.allclose(backward.view1.pts3d, forward.view1.pts3d)


def test_decode_batch_equals_one_by_one_with_mixed_shapes(engine, public_dir):
    """Pairs of several shape combinations (landscape, portrait, different sizes) in one
    decode_batch equal decoding each pair alone."""
    rng = np.random.default_rng(0)
    land = [engine.encode(_image(public_dir, p, v)) for p in (0, 1) for v in (1, 2)]  # 48x64
    port = engine.encode(np.ascontiguousarray(np.rot90(_image(public_dir, 0, 1))))  # 64x48
    wide = engine.encode(rng.integers(0, 256, (32, 80, 3), dtype=np.uint8))
    pairs = [(land[0], land[1]), (port, land[1]), (land[2], land[3]), (land[3], port),
             (port, wide), (land[1], land[0]), (port, land[2])]
    batched = engine.decode_batch(pairs)
    for i, (a, b) in enumerate(pairs):
        alone = engine.decode(a, b)
        for name in ("view1", "view2"):
            for k in KEYS:
                x, y = getattr(getattr(batched[i], name), k), getattr(getattr(alone, name), k)
                _close(f"pair {i} {name} {k}", x, y.numpy())
    assert batched[1].view1.pts3d.shape == (64, 48, 3) and batched[1].view2.pts3d.shape == (48, 64, 3)
    assert batched[4].view2.desc.shape == (32, 80, 24)


def test_encode_batch_equals_single(engine, public_dir):
    imgs = [_image(public_dir, 0, 1), np.ascontiguousarray(np.rot90(_image(public_dir, 0, 2))), _image(public_dir, 1, 1)]
    batch = engine.encode_batch(imgs, ["x", "y", "z"])
    for im, v, fid in zip(imgs, batch, "xyz"):
        single = engine.encode(im)
        assert v.frame_id == fid and v.features.grid == single.features.grid
        _close("tokens", v.features.tokens, single.features.tokens.numpy())


def test_engine_shared_between_threads(engine, public_dir, public):
    """Several threads (nodes) using one engine get correct results."""
    v1, v2 = engine.encode(_image(public_dir, 0, 1)), engine.encode(_image(public_dir, 0, 2))
    results, errors = [], []

    def work():
        try:
            for _ in range(3):
                results.append(engine.decode(v1, v2).view2.pts3d)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 9
    for r in results:
        _close("threaded", r, public["pair0_view2_pts3d_in_other_view"][0])


def test_engine_resizes_by_default(public_dir):
    eng = Mast3rEngine.from_checkpoint(public_dir / "mast3r_tiny_public.pth", device="cpu", size=128)
    v = eng.encode(np.zeros((101, 203, 3), np.uint8))
    assert v.transform.network_size == (64, 128) and v.features.grid == (4, 8)


def test_engine_rejects_foreign_features(engine):
    fake = EncodedView(features={"gt": 1}, transform=ImageTransform.identity(48, 64))
    with pytest.raises(ValueError, match="not produced by Mast3rEngine"):
        engine.decode(fake, fake)


def test_no_resize_rejects_bad_sizes(engine):
    with pytest.raises(ValueError, match="width 70 not a multiple of 16"):
        engine.encode(np.zeros((48, 70, 3), np.uint8))


def test_bf16_trunk_close_to_fp32(public_dir, public):
    """bf16 trunk + fp32 heads (meant for CUDA; runs on CPU too) stays near fp32."""
    eng = Mast3rEngine.from_checkpoint(public_dir / "mast3r_tiny_public.pth", device="cpu",
                                       dtype="bf16", resize=False)
    assert eng.model.enc_blocks[0].attn.qkv.weight.dtype == torch.bfloat16
    assert eng.model.downstream_head1.dpt.head[0].weight.dtype == torch.float32
    pred = eng.predict(_image(public_dir, 0, 1), _image(public_dir, 0, 2))
    assert pred.view1.pts3d.dtype == torch.float32
    _close("bf16 pts3d", pred.view1.pts3d, public["pair0_view1_pts3d"][0], atol=0.05, rtol=0.05)
    _close("bf16 desc", pred.view1.desc, public["pair0_view1_desc"][0], atol=0.1, rtol=0.0)


def test_resolve_dtype():
    assert resolve_dtype("bf16") is torch.bfloat16 and resolve_dtype(torch.float16) is torch.float16
    with pytest.raises(ValueError, match="unsupported dtype 'int8'"):
        resolve_dtype("int8")


# ----------------------------------------------------------------------------- commands
@pytest.mark.parametrize("ckpt", ["pth", "safetensors"])
def test_infer_command_on_fixture_files(public_dir, public, tmp_path, ckpt):
    """`mast3r-ros infer --checkpoint <fixture> --no-resize pair0_view1.png pair0_view2.png`
    equals the fixture outputs (float32, no batch dimension). The .safetensors is first
    converted by `mast3r-ros convert` (the public one has no config beside it)."""
    path = public_dir / "mast3r_tiny_public.pth"
    if ckpt == "safetensors":
        st = tmp_path / "tiny.safetensors"
        assert cli_main(["convert", str(path), str(st)]) == 0
        path = st
    out = tmp_path / "o.npz"
    rc = cli_main(["infer", "--checkpoint", str(path), "--no-resize", str(public_dir / "images/pair0_view1.png"),
                   str(public_dir / "images/pair0_view2.png"), "--out", str(out), "--device", "cpu"])
    assert rc == 0
    res = np.load(out)
    assert sorted(res.files) == sorted(OUTPUT_KEYS)
    for k in OUTPUT_KEYS:
        assert res[k].dtype == np.float32
        _close(k, torch.from_numpy(res[k]), public[f"pair0_{k}"][0])


def test_infer_command_errors(public_dir, tmp_path, capsys):
    bad = tmp_path / "bad.png"
    Image.fromarray(np.zeros((50, 64, 3), np.uint8)).save(bad)
    args = ["infer", "--checkpoint", str(public_dir / "mast3r_tiny_public.pth"), "--no-resize",
            str(bad), str(public_dir / "images/pair0_view2.png"), "--out", str(tmp_path / "o.npz")]
    assert cli_main(args) == 2
    assert "bad.png: image height 50 not a multiple of 16" in capsys.readouterr().err
    args[2], args[4] = str(tmp_path / "missing.pth"), str(public_dir / "images/pair0_view1.png")
    assert cli_main(args) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_infer_command_resizes_without_flag(public_dir, tmp_path):
    out = tmp_path / "o.npz"
    assert cli_main(["infer", "--checkpoint", str(public_dir / "mast3r_tiny_public.pth"), "--size", "128",
                     str(public_dir / "images/pair0_view1.png"), str(public_dir / "images/pair0_view2.png"),
                     "--out", str(out), "--device", "cpu"]) == 0
    res = np.load(out)
    assert res["view1_pts3d"].shape == (96, 128, 3) and res["view2_desc"].shape == (96, 128, 24)


def test_bench_command_tiny(capsys):
    assert cli_main(["bench", "--config", "tiny", "--height", "32", "--width", "48", "--iters", "1",
                     "--warmup", "0", "--device", "cpu", "--batch", "2"]) == 0
    report = json.loads(capsys.readouterr().out)
    for key in ("encoder_ms_per_image", "decoder_heads_ms_per_pair", "pairs_per_s", "peak_rss_mb"):
        assert report[key] > 0
    assert report["batch"] == 2 and report["device"] == "cpu"


def test_bench_command_checkpoint_and_bad_size(public_dir, capsys):
    assert cli_main(["bench", "--config", str(public_dir / "mast3r_tiny_public.pth"), "--height", "32",
                     "--width", "32", "--iters", "1", "--warmup", "0", "--device", "cpu"]) == 0
    capsys.readouterr()
    assert cli_main(["bench", "--height", "40", "--width", "32"]) == 2
    assert "height 40 not a multiple of 16" in capsys.readouterr().err
