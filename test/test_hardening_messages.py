"""Issue 12, class 6: errors name the input, what was expected and what arrived, instead of
leaking an internal message ("maximum recursion depth exceeded", "Cannot copy out of meta
tensor", byte-order / memory-format complaints of torch)."""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from hostile import assert_refused, run_main

LEAKS = re.compile(r"recursion depth|meta tensor|byte order|memory format|Traceback|object has no attribute",
                   re.IGNORECASE)


@pytest.fixture(scope="module")
def container(reference_dir: Path):
    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(reference_dir / "public" / "mast3r_tiny_public.pth", weights_only=True)


def _pth(path: Path, container, model=None, args=True, **changes) -> str:
    sd = {**container["model"], **changes}
    obj = {**container, "model": sd}
    if model is not None:
        obj["args"] = argparse.Namespace(model=model,
                                         fixture_head_overrides=container["args"].fixture_head_overrides)
    if not args:
        obj["args"] = {"model": "AsymmetricMASt3R()"}
    torch.save(obj, path)
    return str(path)


def _st(path: Path, container, metadata=None) -> str:
    sd = {k: v.contiguous() for k, v in container["model"].items() if ".layer_rn." not in k}
    save_file(sd, str(path), metadata=metadata)
    return str(path)


def test_messages_name_input_expected_and_arrived(container, tmp_path, capsys):
    d = tmp_path
    deep_string = "AsymmetricMASt3R(enc_depth=" + "[" * 3000 + "]" * 3000 + ")"
    (d / "cfgdir").mkdir()
    _st(d / "cfgdir" / "w.safetensors", container)
    (d / "cfgdir" / "config.json").write_text("[" * 50_000 + "]" * 50_000)
    torch.save([1, 2, 3], d / "list.pth")
    (d / "png.safetensors").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
    np.savez(d / "nokey.npz", something=np.zeros(3))
    rng = np.random.default_rng(0)
    np.savez(d / "dims.npz", view1_desc=rng.normal(size=(8, 8, 24)).astype(np.float32),
             view2_desc=rng.normal(size=(8, 8, 16)).astype(np.float32))
    np.savez(d / "nobatch.npz", view1_desc=np.ones((1, 8, 8, 24), np.float32), view2_desc=np.ones((8, 8, 24), np.float32))
    np.savez(d / "badconf.npz", view1_desc=np.ones((8, 8, 24), np.float32), view2_desc=np.ones((8, 8, 24), np.float32),
             view1_desc_conf=np.ones((4, 4), np.float32))
    meta_w = torch.empty(container["model"]["decoder_embed.weight"].shape, device="meta")
    cases = [
        (["convert", _pth(d / "deep.pth", container, model=deep_string), str(d / "o.safetensors")],
         "convert", [r"deep\.pth: args\.model:", r"(nested|nests)"]),
        (["convert", _st(d / "deepmeta.safetensors", container, {"mast3r_config": "{" * 1 + '"a":' * 1 + "[" * 50_000 + "]" * 50_000 + "}"}),
          str(d / "o.safetensors")], "convert", [r"deepmeta\.safetensors metadata: invalid MASt3R config"]),
        (["convert", str(d / "cfgdir" / "w.safetensors"), str(d / "o.safetensors")], "convert",
         [r"config\.json: invalid MASt3R config: JSON nested too deeply"]),
        (["convert", _pth(d / "meta.pth", container, **{"decoder_embed.weight": meta_w}), str(d / "o.safetensors")],
         "convert", [r"meta\.pth: tensor 'decoder_embed\.weight' has no data \(device meta\); expected weights"]),
        (["convert", _pth(d / "argsdict.pth", container, args=False), str(d / "o.safetensors")], "convert",
         [r"argsdict\.pth: 'args' is a dict, expected argparse\.Namespace"]),
        (["convert", str(d / "list.pth"), str(d / "o.safetensors")], "convert",
         [r"list\.pth: expected a dict with a 'model' state dict .* got list"]),
        (["convert", str(d / "png.safetensors"), str(d / "o.safetensors")], "convert",
         [r"png\.safetensors: not a readable safetensors file"]),
        (["match", "--desc", str(d / "nokey.npz"), "--out", str(d / "m.npz")], "match",
         [r"--desc: .*nokey\.npz has no 'view1_desc' \(keys: \['something'\]\)"]),
        (["match", "--desc", str(d / "dims.npz"), "--out", str(d / "m.npz")], "match",
         [r"desc1 and desc2 must have the same descriptor size, got 24 and 16"]),
        (["match", "--desc", str(d / "nobatch.npz"), "--out", str(d / "m.npz")], "match",
         [r"view1_desc must be \(H, W, D\) without batch dimension, got \(1, 8, 8, 24\)"]),
        (["match", "--desc", str(d / "badconf.npz"), "--out", str(d / "m.npz")], "match",
         [r"view1_desc_conf must be float \(H, W\) = \(8, 8\), got \(4, 4\) float32"]),
        (["synth", "--frames", "1", "--out", str(d / "s")], "synth", [r"frames must be >= 2, got 1"]),
        (["eval", "--gt", str(d / "nokey.npz"), "--est", str(d / "nokey.npz")], "eval", [r"nokey\.npz:1: not UTF-8 text; expected a TUM"]),
    ]
    for argv, cmd, pats in cases:
        r = run_main(argv, capsys)
        assert_refused(r, cmd, *pats)
        assert not LEAKS.search(r["stderr"]), r["stderr"]
    assert not (d / "o.safetensors").exists()


def test_big_endian_descriptors_match_like_native_ones(tmp_path, capsys):
    """torch refuses non-native byte order ("Conversion between byte orders is currently not
    supported"); the loader converts, so the result equals the native file's."""
    from mast3r_ros.synth.homography import homography_pair

    pair = homography_pair(48, 64, noise=0.02)
    d1, d2 = pair.desc1.numpy(), pair.desc2.numpy()
    np.savez(tmp_path / "le.npz", view1_desc=d1, view2_desc=d2)
    np.savez(tmp_path / "be.npz", view1_desc=d1.astype(">f4"), view2_desc=d2.astype(">f4"))
    for name in ("le", "be"):
        r = run_main(["match", "--desc", str(tmp_path / f"{name}.npz"), "--out", str(tmp_path / f"{name}_m.npz")], capsys)
        assert r["rc"] == 0, r["stderr"]
    a, b = np.load(tmp_path / "le_m.npz"), np.load(tmp_path / "be_m.npz")
    assert len(a["xy1"]) > 0
    np.testing.assert_array_equal(a["xy1"], b["xy1"])
    np.testing.assert_array_equal(a["xy2"], b["xy2"])


def test_typed_errors_carry_the_argument():
    from mast3r_ros.errors import CheckpointError, ConfigError, InputError, LimitError, NonFiniteError
    from mast3r_ros.geometry import check_T
    from mast3r_ros.synth.sequence import SynthConfig

    e = pytest.raises(ConfigError, SynthConfig, frames=2.5).value
    assert e.argument == "frames" and "expected an integer, got 2.5" in str(e)
    e = pytest.raises(LimitError, SynthConfig, frames=2, width=5000, height=16).value
    assert isinstance(e, ValueError) and "4096" in str(e)
    assert issubclass(CheckpointError, RuntimeError) and issubclass(NonFiniteError, RuntimeError)
    assert issubclass(ConfigError, InputError) and issubclass(InputError, ValueError)
    with pytest.raises(InputError, match=r"T_world_cam\[:3, :3\] is not a rotation"):
        check_T(np.diag([1.0, 1.0, 2.0, 1.0]), "T_world_cam")
    json.dumps({"ok": True})
