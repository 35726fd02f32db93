"""Issue 12, class 2: checkpoint configurations are validated before anything is built or
allocated: types (an int is an int), ranges, finite epsilons, known position embeddings,
depths compared with the state-dict keys; Python entry points raise typed errors."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from hostile import assert_refused, run_cli_limited
from mast3r_ros.errors import CheckpointError, ConfigError
from mast3r_ros.model.checkpoint import (
    build_model, config_from_constructor_kwargs, config_from_json, parse_constructor_string,
    read_checkpoint,
)
from mast3r_ros.model.network import Mast3rConfig

TINY = {"enc_embed_dim": 48, "enc_depth": 2, "enc_num_heads": 3, "dec_embed_dim": 32,
        "dec_depth": 10, "dec_num_heads": 2}
OVR = {"dpt_feature_dim": 16, "dpt_last_dim": 8, "dpt_layer_dims": [8, 12, 16, 24],
       "desc_mlp_hidden_dim_factor": 0.125}


def _string(**kw) -> str:
    return "AsymmetricMASt3R(" + ", ".join(f"{k}={v!r}" for k, v in {**TINY, **kw}.items()) + ")"


# (constructor kwargs change, regex the message must match)
BAD_KWARGS = [
    ({"enc_depth": 2.9}, r"enc_depth.*integer.*2\.9"),
    ({"enc_depth": "2"}, r"enc_depth.*integer.*'2'"),
    ({"enc_depth": True}, r"enc_depth.*integer.*True"),
    ({"enc_depth": 10**8}, r"enc_depth.*\[1, 128\].*100000000"),
    ({"enc_depth": 0}, r"enc_depth.*\[1, 128\]"),
    ({"dec_depth": -3}, r"dec_depth"),
    ({"enc_embed_dim": 10**6}, r"enc_embed_dim.*4096"),
    ({"enc_num_heads": float("inf")}, r"enc_num_heads.*inf"),
    ({"dec_num_heads": 7}, r"head dim"),
    ({"mlp_ratio": 1e30}, r"mlp_ratio.*16"),
    ({"mlp_ratio": float("nan")}, r"mlp_ratio.*finite.*nan"),
    ({"mlp_ratio": -4.0}, r"mlp_ratio"),
    ({"layernorm_eps": -1e-6}, r"layernorm_eps.*\(0, 0\.1\]"),
    ({"layernorm_eps": float("nan")}, r"layernorm_eps.*nan"),
    ({"layernorm_eps": float("inf")}, r"layernorm_eps"),
    ({"layernorm_eps": "1e-6"}, r"layernorm_eps.*'1e-6'"),
    ({"patch_size": 8}, r"patch_size"),
    ({"patch_size": 16.5}, r"patch_size.*integer"),
    ({"pos_embed": "cosine"}, r"pos_embed='cosine'"),
    ({"pos_embed": "RoPE0"}, r"rope_base"),
    ({"pos_embed": "RoPE1e999"}, r"pos_embed"),
    ({"pos_embed": 100}, r"pos_embed=100"),
    ({"depth_mode": ("exp", 0, 1)}, r"depth_mode"),
    ({"head_type": "linear"}, r"head_type"),
    ({"evil": "__import__('os')"}, r"unsupported constructor argument.*evil"),
]


@pytest.mark.parametrize("change,match", BAD_KWARGS, ids=[str(c) for c, _ in BAD_KWARGS])
def test_bad_constructor_values_refused_before_building(change, match):
    kwargs = parse_constructor_string(_string(**change)) if "evil" not in change else {**TINY, **change}
    with pytest.raises(ConfigError, match=match):
        config_from_constructor_kwargs(kwargs, OVR)


BAD_OVERRIDES = [
    ({"desc_mlp_hidden_dim_factor": 1e30}, r"desc_mlp_hidden_dim_factor.*64"),
    ({"desc_mlp_hidden_dim_factor": float("nan")}, r"desc_mlp_hidden_dim_factor"),
    ({"dpt_layer_dims": [8, 12, 16]}, r"dpt_layer_dims.*4 entries"),
    ({"dpt_layer_dims": [8, 12.5, 16, 24]}, r"dpt_layer_dims"),
    ({"dpt_layer_dims": "8,12,16,24"}, r"dpt_layer_dims"),
    ({"dpt_feature_dim": 2**40}, r"dpt_feature_dim"),
    ({"dpt_last_dim": 0}, r"dpt_last_dim"),
    ({"bogus": 1}, r"unknown head override 'bogus'"),
]


@pytest.mark.parametrize("change,match", BAD_OVERRIDES, ids=[str(c) for c, _ in BAD_OVERRIDES])
def test_bad_head_overrides_refused(change, match):
    with pytest.raises(ConfigError, match=match):
        config_from_constructor_kwargs(dict(TINY), {**OVR, **change})


@pytest.mark.parametrize("value,match", [
    (None, r"expected a str.*NoneType"), (b"AsymmetricMASt3R()", r"bytes"), (42, r"int"),
    ("AsymmetricMASt3R(" + "x" * 30_000 + ")", r"30,018 characters"),
    ("AsymmetricMASt3R(enc_depth=24, **{'a': 1})", r"keyword arguments only"),
    ("AsymmetricMASt3R(depth_mode=((((((('exp',),),),),),),))", r"nests tuples deeper"),
    ("AsymmetricMASt3R(enc_depth=" + "(" * 5000 + "1" + ")" * 5000 + ")", r"(nested|nests tuples)"),
    ("AsymmetricMASt3R(enc_depth=" + "-" * 5000 + "1)", r"(nested too deeply|nests tuples)"),
], ids=["none", "bytes", "int", "long", "kwargs", "nested7", "parens5000", "minus5000"])
def test_parse_constructor_string_typed_errors(value, match):
    with pytest.raises(ConfigError, match=match):
        parse_constructor_string(value)


@pytest.mark.parametrize("data,match", [
    (None, r"expected an object.*NoneType"), ([1, 2], r"list"), ("{}", r"str"),
    ({**TINY, "enc_depth": 2.5}, r"enc_depth.*2\.5"),
    ({**TINY, "fixture_head_overrides": [1]}, r"fixture_head_overrides.*list"),
    ({"enc_depth": "24"}, r"enc_depth.*'24'"),
    ({"layernorm_eps": None}, r"layernorm_eps.*None"),
    ({"rope_base": float("inf")}, r"rope_base"),
], ids=range(8))
def test_config_from_json_typed_errors(data, match):
    with pytest.raises(ConfigError, match=match):
        config_from_json(data)


def test_mast3r_config_from_dict_typed_errors():
    for bad in (None, 3, ["enc_depth"]):
        with pytest.raises(ConfigError, match="expected a mapping"):
            Mast3rConfig.from_dict(bad)
    with pytest.raises(ConfigError, match="keys must be strings"):
        Mast3rConfig.from_dict({1: 2})
    e = pytest.raises(ConfigError, Mast3rConfig, enc_depth=2.0).value
    assert e.argument == "config.enc_depth" and isinstance(e, ValueError)
    # valid values survive unchanged (and numpy integers are accepted as ints)
    import numpy as np

    assert Mast3rConfig(enc_depth=np.int64(3)).enc_depth == 3


@pytest.fixture(scope="module")
def tiny_sd(reference_dir: Path) -> dict[str, torch.Tensor]:
    with torch.serialization.safe_globals([argparse.Namespace]):
        return dict(torch.load(reference_dir / "public" / "mast3r_tiny_public.pth", weights_only=True)["model"])


def _pth(path: Path, sd, model: str, overrides=OVR) -> Path:
    args = argparse.Namespace(model=model, fixture_head_overrides=overrides)
    torch.save({"model": sd, "args": args}, path)
    return path


def test_depth_compared_with_state_dict_before_construction(tiny_sd, tmp_path):
    """A config deeper (or wider) than the weights is refused naming both numbers, before a
    network of that size is even built on the meta device."""
    for change, match in (({"enc_depth": 128}, r"enc_depth=128 but the weights hold 2"),
                          ({"dec_depth": 64}, r"dec_depth=64 but the weights hold 10"),
                          ({"enc_embed_dim": 96, "enc_num_heads": 3}, r"enc_embed_dim=96 but the weights hold 48")):
        ckpt = read_checkpoint(_pth(tmp_path / "x.pth", tiny_sd, _string(**change)))
        with pytest.raises(CheckpointError, match=match):
            build_model(ckpt)


def test_files_with_absurd_configs_refused_by_the_cli(tiny_sd, tmp_path):
    """Through `mast3r-ros convert` in a 3 GiB address space: .pth constructor strings and
    safetensors metadata with float / string / huge / NaN values; all exit 2 naming the field."""
    cases, expect = [], []
    for i, (change, pat) in enumerate([
            ({"enc_depth": 10**8}, r"enc_depth"), ({"enc_depth": 2.9}, r"enc_depth.*2\.9"),
            ({"mlp_ratio": 1e30}, r"mlp_ratio"), ({"pos_embed": "RoPE100x"}, r"pos_embed"),
            ({"layernorm_eps": float("nan")}, r"layernorm_eps")]):
        src = _pth(tmp_path / f"p{i}.pth", tiny_sd, _string(**change))
        cases.append(["convert", str(src), str(tmp_path / f"p{i}.safetensors")])
        expect.append((r"args\.model", pat))
    src = _pth(tmp_path / "ovr.pth", tiny_sd, _string(), {**OVR, "desc_mlp_hidden_dim_factor": 1e30})
    cases.append(["convert", str(src), str(tmp_path / "ovr.safetensors")])
    expect.append((r"desc_mlp_hidden_dim_factor",))
    sd = {k: v.contiguous() for k, v in tiny_sd.items() if ".layer_rn." not in k}
    for i, meta in enumerate([{**TINY, "enc_depth": "2"}, {**TINY, "dec_depth": 1e8},
                              {**TINY, "enc_num_heads": None}, {"layernorm_eps": -1},
                              "[" * 100_000 + "]" * 100_000]):
        st = tmp_path / f"s{i}.safetensors"
        save_file(sd, str(st), metadata={"mast3r_config": meta if isinstance(meta, str) else json.dumps(meta)})
        cases.append(["convert", str(st), str(tmp_path / f"s{i}_out.safetensors")])
        expect.append((r"invalid MASt3R config",))
    results = run_cli_limited(cases)
    for r, pats in zip(results, expect):
        assert_refused(r, "convert", *pats)
    assert not list(tmp_path.glob("*_out.safetensors"))
