"""Checkpoint loading: constructor strings, safe unpickling, strict key/shape checks,
.pth / .safetensors variants, conversion."""
from __future__ import annotations

import argparse
import json
import math
import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from mast3r_ros.cli import main as cli_main
from mast3r_ros.model.checkpoint import (
    config_from_constructor_kwargs,
    load_model,
    parse_constructor_string,
    read_checkpoint,
)
from mast3r_ros.model.network import Mast3rConfig, Mast3rNet

TINY_KW = ("enc_embed_dim=48, enc_depth=2, enc_num_heads=3, dec_embed_dim=32, dec_depth=10, "
           "dec_num_heads=2")
TRAINING_STRING = ("AsymmetricMASt3R(pos_embed='RoPE100', patch_embed_cls='ManyAR_PatchEmbed', "
                   "img_size=(512, 512), head_type='catmlp+dpt', output_mode='pts3d+desc24', "
                   "depth_mode=('exp', -inf, inf), conf_mode=('exp', 1, inf), enc_embed_dim=1024, "
                   "enc_depth=24, enc_num_heads=16, dec_embed_dim=768, dec_depth=12, dec_num_heads=12, "
                   "two_confs=True, desc_conf_mode=('exp', 0, inf))")
INFERENCE_TINY = ("AsymmetricMASt3R(" + TINY_KW + ", pos_embed='RoPE100', patch_embed_cls='PatchEmbedDust3R', "
                  "img_size=(128, 128), head_type='catmlp+dpt', output_mode='pts3d+desc24', "
                  "depth_mode=('exp', -inf, inf), conf_mode=('exp', 1, inf), landscape_only=False, "
                  "two_confs=True, desc_conf_mode=('exp', 0, inf))")
TINY_OVERRIDES = {"dpt_feature_dim": 16, "dpt_last_dim": 8, "dpt_layer_dims": [8, 12, 16, 24],
                  "desc_mlp_hidden_dim_factor": 0.125}


@pytest.fixture(scope="module")
def public_pth(reference_dir: Path) -> Path:
    return reference_dir / "public" / "mast3r_tiny_public.pth"


@pytest.fixture(scope="module")
def public_sd(public_pth: Path) -> dict[str, torch.Tensor]:
    with torch.serialization.safe_globals([argparse.Namespace]):
        return dict(torch.load(public_pth, weights_only=True)["model"])


def _save_pth(path: Path, sd, model_string: str | None, overrides=None) -> Path:
    args = argparse.Namespace(model=model_string) if model_string else None
    if args is not None and overrides is not None:
        args.fixture_head_overrides = overrides
    torch.save({"model": sd, "args": args, "epoch": 3} if args else {"model": sd}, path)
    return path


def _same_weights(a: Mast3rNet, b: Mast3rNet) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ----------------------------------------------------------------------------- strings
def test_parse_training_and_inference_strings(reference_dir: Path):
    manifest = json.loads((reference_dir / "mast3r_vitl_checkpoint_manifest.json").read_text())
    cfgs = []
    for key in ("constructor_string_inference", "args_model_expected_in_official_pth",
                "args_model_after_reference_loader_transform"):
        kw = parse_constructor_string(manifest[key])
        assert kw["depth_mode"] == ("exp", -math.inf, math.inf)
        assert kw["conf_mode"] == ("exp", 1, math.inf)
        cfgs.append(config_from_constructor_kwargs(kw))
    assert cfgs[0] == cfgs[1] == cfgs[2] == Mast3rConfig()


@pytest.mark.parametrize("src, match", [
    ("AsymmetricMASt3R(enc_depth=__import__('os').system('echo hi'))", "unsupported expression"),
    ("os.system('ls')", "must be a call of"),
    ("AsymmetricMASt3R(**{'a': 1})", "keyword arguments only"),
    ("AsymmetricMASt3R(depth_mode=('exp', -inf, inf)", "not valid Python syntax"),
    ("AsymmetricMASt3R(x=[i for i in range(3)])", "unsupported expression"),
])
def test_constructor_string_rejects_code(src, match):
    with pytest.raises(ValueError, match=match):
        parse_constructor_string(src)


@pytest.mark.parametrize("change, match", [
    ("head_type='linear'", "unsupported head_type"),
    ("depth_mode=('square', 0, inf)", "unsupported depth_mode"),
    ("pos_embed='cosine'", "unsupported pos_embed"),
    ("freeze_encoder=True", r"unsupported constructor argument\(s\) \['freeze_encoder'\]"),
])
def test_unsupported_constructor_arguments(change, match):
    kw = parse_constructor_string(TRAINING_STRING[:-1] + ", " + change + ")")
    with pytest.raises(ValueError, match=match):
        config_from_constructor_kwargs(kw)


# ----------------------------------------------------------------------------- .pth variants
def test_training_and_inference_string_checkpoints_load(public_pth, public_sd, tmp_path):
    """The fixture's training string (ManyAR_PatchEmbed, no landscape_only) and an inference
    string (PatchEmbedDust3R, landscape_only=False), with overrides or with the head
    constants inferred from shapes, all give the same model."""
    ref = load_model(public_pth)
    assert ref.cfg == Mast3rConfig.tiny()
    ckpt = read_checkpoint(public_pth)
    assert "ManyAR_PatchEmbed" in ckpt.constructor and "landscape_only" not in ckpt.constructor
    inf_over = _save_pth(tmp_path / "inf_over.pth", public_sd, INFERENCE_TINY, TINY_OVERRIDES)
    inf_shapes = _save_pth(tmp_path / "inf_shapes.pth", public_sd, INFERENCE_TINY)
    for path in (inf_over, inf_shapes):
        m = load_model(path)
        assert m.cfg == Mast3rConfig.tiny(), path
        assert _same_weights(m, ref)
    assert read_checkpoint(inf_over).extra == {"epoch": 3}


def test_aliases_are_one_tensor(public_pth):
    m = load_model(public_pth)
    s = m.downstream_head2.dpt.scratch
    assert s.layer_rn[2].weight is s.layer3_rn.weight
    sd = m.state_dict()
    assert torch.equal(sd["downstream_head1.dpt.scratch.layer_rn.0.weight"],
                       sd["downstream_head1.dpt.scratch.layer1_rn.weight"])


def test_official_head_constants_do_not_fit_tiny_weights(public_sd, tmp_path):
    """The README's warning: the tiny weights under the official head constants fail loudly."""
    path = _save_pth(tmp_path / "x.pth", public_sd, INFERENCE_TINY, {"dpt_feature_dim": 256})
    with pytest.raises(RuntimeError, match=r"x\.pth.*shape mismatch.*downstream_head1\.dpt\.scratch"):
        load_model(path)


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_malicious_pickle_refused_without_running(tmp_path, writer):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    payload = {"model": {}, "args": _Evil(marker)}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(payload, f, protocol=2)
    with pytest.raises(RuntimeError, match=r"evil\.pth: refusing to load.*nothing from the file was executed"):
        read_checkpoint(path)
    assert not marker.exists()
    if writer == "torch.save":
        with pytest.raises(RuntimeError, match=r"refusing to load: the pickle needs global posix\.system.*argparse\.Namespace"):
            read_checkpoint(path)


def test_pickle_with_other_global_refused(tmp_path, public_sd):
    """Anything beyond argparse.Namespace (here a pathlib.Path in args) is refused."""
    path = tmp_path / "other.pth"
    torch.save({"model": public_sd, "args": argparse.Namespace(model=INFERENCE_TINY, out=Path("/x"))}, path)
    with pytest.raises(RuntimeError, match=r"refusing to load: the pickle needs global pathlib\.PosixPath"):
        read_checkpoint(path)


def test_wrong_shape_names_key_and_file(public_sd, tmp_path):
    sd = dict(public_sd)
    sd["dec_blocks.4.mlp.fc1.weight"] = torch.zeros(64, 32)
    path = _save_pth(tmp_path / "wrong_shape.pth", sd, INFERENCE_TINY, TINY_OVERRIDES)
    with pytest.raises(RuntimeError, match=r"wrong_shape\.pth.*dec_blocks\.4\.mlp\.fc1\.weight: file \(64, 32\) vs model \(128, 32\)"):
        load_model(path)


def test_missing_and_unexpected_keys_named(public_sd, tmp_path):
    sd = dict(public_sd)
    del sd["enc_blocks.1.attn.proj.bias"]
    sd["enc_blocks.2.norm1.weight"] = torch.ones(48)
    path = _save_pth(tmp_path / "missing.pth", sd, INFERENCE_TINY, TINY_OVERRIDES)
    with pytest.raises(RuntimeError, match=r"missing\.pth.*missing key\(s\).*enc_blocks\.1\.attn\.proj\.bias.*"
                                           r"unexpected key\(s\).*enc_blocks\.2\.norm1\.weight"):
        load_model(path)


def test_inconsistent_alias_refused(public_sd, tmp_path):
    sd = dict(public_sd)
    sd["downstream_head1.dpt.scratch.layer_rn.1.weight"] = sd["downstream_head1.dpt.scratch.layer_rn.1.weight"] + 1
    path = _save_pth(tmp_path / "alias.pth", sd, INFERENCE_TINY, TINY_OVERRIDES)
    with pytest.raises(RuntimeError, match=r"alias 'downstream_head1\.dpt\.scratch\.layer_rn\.1\.weight' differs"):
        read_checkpoint(path)


@pytest.mark.parametrize("cut", [0.5, 0.999])
def test_truncated_pth(public_pth, tmp_path, cut):
    data = public_pth.read_bytes()
    path = tmp_path / "trunc.pth"
    path.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(RuntimeError, match=r"trunc\.pth: not a readable torch checkpoint"):
        read_checkpoint(path)


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        read_checkpoint("/nonexistent/model.pth")


# ----------------------------------------------------------------------------- safetensors
def test_safetensors_with_alias_keys_loads(public_pth, public_sd, tmp_path):
    """All 657 entries (aliases included, as separate copies) load like the .pth."""
    sd = {k: v.clone().contiguous() for k, v in public_sd.items()}
    path = tmp_path / "with_alias.safetensors"
    save_file(sd, str(path))
    (tmp_path / "with_alias.config.json").write_text(json.dumps(Mast3rConfig.tiny().to_dict()))
    assert _same_weights(load_model(path), load_model(public_pth))


def test_public_safetensors_without_config_is_a_clear_error(reference_dir: Path):
    """Head counts are not in the tensors; a 48-wide tiny model cannot be guessed."""
    with pytest.raises(RuntimeError, match="cannot infer the number of attention heads.*config.json"):
        read_checkpoint(reference_dir / "public" / "mast3r_tiny_public.safetensors")


def test_safetensors_config_inferred_from_shapes(tmp_path):
    """64-wide heads (as in ViT-L) and the head constants are read off the shapes."""
    cfg = Mast3rConfig(enc_embed_dim=128, enc_depth=2, enc_num_heads=2, dec_embed_dim=64, dec_depth=4,
                       dec_num_heads=1, dpt_feature_dim=8, dpt_last_dim=6, dpt_layer_dims=(4, 5, 6, 7),
                       desc_mlp_hidden_dim_factor=0.1)
    torch.manual_seed(0)
    model = Mast3rNet(cfg)
    sd = {k: v for k, v in model.state_dict().items() if ".layer_rn." not in k}
    path = tmp_path / "noconf.safetensors"
    save_file(sd, str(path))
    loaded = load_model(path)
    assert loaded.cfg.desc_mlp_hidden_dim == cfg.desc_mlp_hidden_dim == 19
    assert loaded.cfg == Mast3rConfig.from_dict({**cfg.to_dict(),
                                                 "desc_mlp_hidden_dim_factor": loaded.cfg.desc_mlp_hidden_dim_factor})
    assert _same_weights(loaded, model)


def test_truncated_safetensors(reference_dir: Path, tmp_path):
    data = (reference_dir / "public" / "mast3r_tiny_public.safetensors").read_bytes()
    path = tmp_path / "trunc.safetensors"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(RuntimeError, match=r"trunc\.safetensors: not a readable safetensors file"):
        read_checkpoint(path)


def test_convert_command_round_trip(public_pth, tmp_path):
    out = tmp_path / "tiny.safetensors"
    assert cli_main(["convert", str(public_pth), str(out)]) == 0
    converted = read_checkpoint(out)  # config from the file's own metadata
    assert converted.config == Mast3rConfig.tiny()
    assert len(converted.state_dict) == 649  # aliases dropped, as safetensors' save_model does
    assert _same_weights(load_model(out), load_model(public_pth))
    assert cli_main(["convert", str(public_pth), str(out)]) == 2  # exists, no --force
    assert cli_main(["convert", str(public_pth), str(out), "--force"]) == 0
