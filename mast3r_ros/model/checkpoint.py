"""Loading MASt3R checkpoints safely: official ``.pth`` containers and ``.safetensors``.

- ``.pth``: a pickled dict ``{'model': state_dict, 'args': argparse.Namespace, ...}``. It is
  read with ``torch.load(weights_only=True)`` allowing only ``argparse.Namespace``; any other
  global (e.g. ``os.system`` in a malicious file) is refused before anything runs.
  ``args.model`` is a constructor string such as
  ``AsymmetricMASt3R(enc_depth=24, ..., depth_mode=('exp', -inf, inf))``; it is never
  evaluated: we walk its syntax tree and accept literals, tuples and ``inf`` only.
- ``.safetensors``: no constructor string. The config comes from, in order: an explicit
  ``config`` argument, our own ``mast3r_config`` metadata entry (written by
  ``mast3r-ros convert``), a ``<name>.config.json`` or ``config.json`` beside the file
  (hub style: constructor keyword arguments, or ``Mast3rConfig`` fields), or the tensor
  shapes (assuming 64-wide attention heads, as in the official model).
- The four DPT / descriptor head constants come from ``args.fixture_head_overrides`` when
  present (the tiny fixtures), else from the tensor shapes.
- Alias keys ``downstream_head{1,2}.dpt.scratch.layer_rn.N.weight`` (the same tensors as
  ``layer{N+1}_rn``) may be present or absent.
"""
from __future__ import annotations

import argparse
import ast
import json
import logging
import math
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from mast3r_ros.errors import CheckpointError, ConfigError, NonFiniteError

from .network import DESC_DIM, Mast3rConfig, Mast3rNet

logger = logging.getLogger(__name__)

CONSTRUCTOR_NAMES = ("AsymmetricMASt3R",)
HEAD_OVERRIDE_KEYS = ("dpt_feature_dim", "dpt_last_dim", "dpt_layer_dims", "desc_mlp_hidden_dim_factor")
METADATA_CONFIG_KEY = "mast3r_config"
_ALIAS_RE = re.compile(r"^(downstream_head[12]\.dpt\.scratch)\.layer_rn\.([0-3])\.weight$")
MAX_CONSTRUCTOR_CHARS = 20_000  # the official string is ~600 characters
MAX_LITERAL_DEPTH = 4  # tuples inside tuples: ('exp', -inf, inf) is depth 1


# ----------------------------------------------------------------------------- constructor string
def _literal(node: ast.AST, src: str, depth: int = 0) -> Any:
    """Value of a literal node: constants, tuples/lists, ``inf``/``nan``, unary +/-."""
    if depth > MAX_LITERAL_DEPTH:
        raise ConfigError(f"constructor string nests tuples deeper than {MAX_LITERAL_DEPTH} levels; "
                          "expected flat literals such as ('exp', -inf, inf)")
    if isinstance(node, ast.Constant) and isinstance(node.value, (str, int, float, bool, type(None))):
        return node.value
    if isinstance(node, (ast.Tuple, ast.List)):
        return tuple(_literal(e, src, depth + 1) for e in node.elts)
    if isinstance(node, ast.Name) and node.id in ("inf", "nan"):
        return float(node.id)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _literal(node.operand, src, depth + 1)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return -v if isinstance(node.op, ast.USub) else v
    raise ConfigError(f"unsupported expression {(ast.get_source_segment(src, node) or '')[:200]!r} in "
                     f"constructor string (only literals, tuples and inf are allowed)")


def parse_constructor_string(src: str) -> dict[str, Any]:
    """``AsymmetricMASt3R(k=v, ...)`` -> {k: v}, without evaluating anything.

    Raises:
        ConfigError (a ValueError): not a string, too long or nested too deeply, or not a
            single call of a known constructor with literal keyword arguments.
    """
    if not isinstance(src, str):
        raise ConfigError(f"constructor string: expected a str such as 'AsymmetricMASt3R(enc_depth=24, "
                          f"...)', got {type(src).__name__}")
    if len(src) > MAX_CONSTRUCTOR_CHARS:
        raise ConfigError(f"constructor string has {len(src):,} characters; expected at most "
                          f"{MAX_CONSTRUCTOR_CHARS:,} (the official one has about 600)")
    short = src if len(src) <= 300 else src[:300] + "..."
    try:
        tree = ast.parse(src.strip(), mode="eval")
    except SyntaxError as exc:
        raise ConfigError(f"constructor string is not valid Python syntax: {exc.msg}: {short!r}") from None
    except (RecursionError, MemoryError, ValueError):
        raise ConfigError(f"constructor string is nested too deeply or malformed: {short!r}") from None
    call = tree.body
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name)
            and call.func.id in CONSTRUCTOR_NAMES):
        raise ConfigError(f"constructor string must be a call of {CONSTRUCTOR_NAMES}, got {short!r}")
    if call.args or any(kw.arg is None for kw in call.keywords):
        raise ConfigError(f"constructor string must use keyword arguments only: {short!r}")
    return {kw.arg: _literal(kw.value, src) for kw in call.keywords}


# ----------------------------------------------------------------------------- kwargs -> config
def _as_float(v: Any) -> Any:
    """'inf', '-inf', 'Infinity' strings (JSON dumps of the modes) -> float; others unchanged."""
    if isinstance(v, str) and v.strip().lower().lstrip("+-") in ("inf", "infinity"):
        return float(v.strip().lower().replace("infinity", "inf"))
    return v


def _mode(v: Any) -> tuple:
    return tuple(_as_float(x) for x in v) if isinstance(v, (list, tuple)) else (v,)


# Constructor keyword -> (required value or None for "any", why). Values we cannot honour
# are refused rather than silently computed differently.
_FIXED_KWARGS: dict[str, tuple[Any, ...]] = {
    "head_type": ("catmlp+dpt",),
    "output_mode": (f"pts3d+desc{DESC_DIM}",),
    "two_confs": (True,),
    "desc_mode": ("norm",),
    "norm_im2_in_dec": (True,),
}
_MODES = {
    "depth_mode": ("exp", -math.inf, math.inf),
    "conf_mode": ("exp", 1, math.inf),
    "desc_conf_mode": ("exp", 0, math.inf),
}
_IGNORED_KWARGS = ("img_size", "landscape_only", "freeze", "patch_embed_cls")
_PATCH_EMBEDS = ("PatchEmbedDust3R", "ManyAR_PatchEmbed")
_DIM_KWARGS = ("enc_embed_dim", "enc_depth", "enc_num_heads", "dec_embed_dim", "dec_depth", "dec_num_heads")


def config_from_constructor_kwargs(kwargs: Mapping[str, Any],
                                   head_overrides: Mapping[str, Any] | None = None) -> Mast3rConfig:
    """Map reference constructor keyword arguments to a ``Mast3rConfig``.

    ``patch_embed_cls='ManyAR_PatchEmbed'`` (training string) is treated as
    ``PatchEmbedDust3R`` with ``landscape_only=False``, as the reference loader does.

    Raises:
        ValueError: unknown keyword, unsupported mode, or a missing dimension.
    """
    if not isinstance(kwargs, Mapping):
        raise ConfigError(f"constructor arguments: expected a mapping, got {type(kwargs).__name__}")
    if head_overrides is not None and not isinstance(head_overrides, Mapping):
        raise ConfigError(f"head overrides: expected a mapping of {list(HEAD_OVERRIDE_KEYS)}, got "
                          f"{type(head_overrides).__name__}")
    kw = {k: _as_float(v) for k, v in kwargs.items()}
    known = set(_FIXED_KWARGS) | set(_MODES) | set(_IGNORED_KWARGS) | set(_DIM_KWARGS) | {
        "pos_embed", "patch_size", "mlp_ratio", "layernorm_eps"}
    unknown = sorted(set(kw) - known)
    if unknown:
        raise ConfigError(f"unsupported constructor argument(s) {unknown}; supported: {sorted(known)}")
    for key, allowed in _FIXED_KWARGS.items():
        if key in kw and kw[key] not in allowed:
            raise ConfigError(f"unsupported {key}={kw[key]!r}; this implementation supports {allowed}")
    for key, expected in _MODES.items():
        if key in kw and _mode(kw[key]) != expected:
            raise ConfigError(f"unsupported {key}={kw[key]!r}; expected {expected}")
    if kw.get("patch_embed_cls", _PATCH_EMBEDS[0]) not in _PATCH_EMBEDS:
        raise ConfigError(f"unsupported patch_embed_cls={kw['patch_embed_cls']!r}; expected one of {_PATCH_EMBEDS}")
    missing = [k for k in _DIM_KWARGS if k not in kw]
    if missing:
        raise ConfigError(f"constructor arguments lack {missing}; cannot size the network")
    values: dict[str, Any] = {k: kw[k] for k in _DIM_KWARGS}  # types checked by Mast3rConfig
    pos = kw.get("pos_embed", "RoPE100")
    m = re.fullmatch(r"RoPE(\d{1,7}(?:\.\d{1,6})?)", pos) if isinstance(pos, str) else None
    if not m:
        raise ConfigError(f"unsupported pos_embed={pos!r}; expected 'RoPE<base>' such as 'RoPE100' "
                          "(base a number between 1 and 1e6)")
    values["rope_base"] = float(m.group(1))
    for key in ("patch_size", "mlp_ratio", "layernorm_eps"):
        if key in kw:
            values[key] = kw[key]
    for key, v in (head_overrides or {}).items():
        if key not in HEAD_OVERRIDE_KEYS:
            raise ConfigError(f"unknown head override {key!r}; valid: {list(HEAD_OVERRIDE_KEYS)}")
        if key == "dpt_layer_dims" and not isinstance(v, (list, tuple)):
            raise ConfigError(f"head override dpt_layer_dims: expected 4 integers, got {v!r}")
        values[key] = tuple(v) if key == "dpt_layer_dims" else v
    return Mast3rConfig.from_dict(values)


def config_from_json(data: Mapping[str, Any]) -> Mast3rConfig:
    """A config.json: either ``Mast3rConfig`` fields or reference constructor kwargs (hub style)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"MASt3R config JSON: expected an object of fields, got {type(data).__name__}")
    data = dict(data)
    overrides = data.pop("fixture_head_overrides", None)
    if overrides is not None and not isinstance(overrides, Mapping):
        raise ConfigError(f"fixture_head_overrides: expected an object, got {type(overrides).__name__}")
    if set(data) <= {f for f in Mast3rConfig().to_dict()}:
        return Mast3rConfig.from_dict({**data, **(overrides or {})})
    return config_from_constructor_kwargs(data, overrides)


# ----------------------------------------------------------------------------- shapes
def canonical_key(key: str) -> str:
    """``...scratch.layer_rn.N.weight`` -> ``...scratch.layer{N+1}_rn.weight``; others unchanged."""
    m = _ALIAS_RE.match(key)
    return f"{m.group(1)}.layer{int(m.group(2)) + 1}_rn.weight" if m else key


def _shape(sd: Mapping[str, torch.Tensor], key: str, path: str) -> tuple[int, ...]:
    if key not in sd:
        raise CheckpointError(f"{path}: missing key {key!r}; is this a MASt3R catmlp+dpt checkpoint?")
    return tuple(sd[key].shape)


def head_constants_from_shapes(sd: Mapping[str, torch.Tensor], path: str = "<state dict>") -> dict[str, Any]:
    """The four head constants read off the tensor shapes of ``downstream_head1``."""
    enc_dim = _shape(sd, "patch_embed.proj.weight", path)[0]
    dec_dim = _shape(sd, "decoder_embed.weight", path)[0]
    p = "downstream_head1."
    layer_dims = tuple(_shape(sd, f"{p}dpt.scratch.layer{i}_rn.weight", path)[1] for i in range(1, 5))
    feature_dim = _shape(sd, f"{p}dpt.scratch.layer1_rn.weight", path)[0]
    last_dim = _shape(sd, f"{p}dpt.head.2.weight", path)[0]
    hidden = _shape(sd, f"{p}head_local_features.fc1.weight", path)[0]
    factor = hidden / (enc_dim + dec_dim)
    while int(factor * (enc_dim + dec_dim)) < hidden:  # float rounding below an integer
        factor = math.nextafter(factor, math.inf)
    return {"dpt_feature_dim": feature_dim, "dpt_last_dim": last_dim,
            "dpt_layer_dims": layer_dims, "desc_mlp_hidden_dim_factor": factor}


def config_from_shapes(sd: Mapping[str, torch.Tensor], path: str = "<state dict>") -> Mast3rConfig:
    """Infer the whole config from tensor shapes. Head counts are not stored in the weights:
    64-wide heads are assumed (true of the official ViT-L); put a config.json beside the file
    for anything else."""
    enc_dim = _shape(sd, "patch_embed.proj.weight", path)[0]
    dec_dim = _shape(sd, "decoder_embed.weight", path)[0]
    depth = lambda prefix: len({k.split(".")[1] for k in sd if k.startswith(prefix)})  # noqa: E731
    for dim in (enc_dim, dec_dim):
        if dim % 64:
            raise CheckpointError(
                f"{path}: cannot infer the number of attention heads for width {dim} from tensor "
                "shapes (64-wide heads assumed); add a config.json beside the file")
    mlp_hidden = _shape(sd, "enc_blocks.0.mlp.fc1.weight", path)[0]
    return Mast3rConfig(
        enc_embed_dim=enc_dim, enc_depth=depth("enc_blocks."), enc_num_heads=enc_dim // 64,
        dec_embed_dim=dec_dim, dec_depth=depth("dec_blocks."), dec_num_heads=dec_dim // 64,
        mlp_ratio=mlp_hidden / enc_dim, **head_constants_from_shapes(sd, path))


# ----------------------------------------------------------------------------- reading files
@dataclass
class Checkpoint:
    """A checkpoint read from disk, not yet in a model.

    Attributes:
        config: the architecture.
        state_dict: canonical keys only (no ``layer_rn.N`` aliases), CPU tensors.
        path: where it came from.
        constructor: the ``args.model`` string of a ``.pth``, if any.
        extra: other top-level entries of a ``.pth`` container that we keep (e.g. epoch).
    """

    config: Mast3rConfig
    state_dict: dict[str, torch.Tensor]
    path: str
    constructor: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


MAX_CHECKPOINT_BYTES = 16 << 30  # decompressed size of all records of a .pth (ViT-L: 2.7 GB)


def check_zip_records(path: Path, max_bytes: int = MAX_CHECKPOINT_BYTES) -> bool:
    """Verify a torch zip archive before loading it: every record's size and CRC.

    Memory-mapped loading reads record bytes straight from their offsets, so a compressed
    record would silently become garbage weights and a short one would read past its end;
    this finds both first.

    Returns:
        True when every record is stored uncompressed (memory mapping is safe), False for
        a legacy (non-zip) file or an archive with compressed records (load without mmap).

    Raises:
        CheckpointError: a record's data or CRC is wrong, a record lies outside the file,
            or the records decompress to more than ``max_bytes``.
    """
    if not zipfile.is_zipfile(path):
        return False
    size = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            total = sum(i.file_size for i in infos)
            if total > max_bytes:
                raise CheckpointError(f"{path}: records decompress to {total / 2**30:.1f} GiB; the "
                                      f"ceiling is {max_bytes / 2**30:.0f} GiB (MAX_CHECKPOINT_BYTES)")
            for i in infos:
                if i.header_offset + 30 + len(i.filename) + i.compress_size > size:
                    raise CheckpointError(f"{path}: record {i.filename!r} ends past the end of the "
                                          f"file ({size:,} bytes); the file is truncated")
            bad = zf.testzip()  # reads every record and checks its CRC-32
    except zipfile.BadZipFile as exc:
        raise CheckpointError(f"{path}: not a readable torch checkpoint (corrupt or truncated zip): "
                              f"{exc}") from None
    except (OSError, EOFError, NotImplementedError) as exc:
        raise CheckpointError(f"{path}: cannot read the zip records ({type(exc).__name__}: {exc}); "
                              "the file is corrupt or uses an unsupported compression") from None
    if bad is not None:
        raise CheckpointError(f"{path}: record {bad!r} fails its CRC-32 check; the file is corrupt "
                              "(re-download it)")
    return all(i.compress_type == zipfile.ZIP_STORED for i in infos)


def _torch_load(path: Path) -> Any:
    """``torch.load(weights_only=True)`` with only ``argparse.Namespace`` allowed; memory
    mapped only when every zip record is a verified, uncompressed one."""
    try:
        mmap = check_zip_records(path)
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        msg = str(exc)
        first = msg.strip().splitlines()[0] if msg.strip() else type(exc).__name__
        glob = re.search(r"(?:GLOBAL|global)\s+([\w.]+)", msg)
        if glob or "weights only" in msg.lower() or "weights_only" in msg.lower():
            detail = re.search(r"WeightsUnpickler error:\s*(.+)", msg)
            what = (f"needs global {glob.group(1)}, which is not allowed" if glob else
                    f"uses something a weights-only load refuses ({detail.group(1).strip() if detail else first})")
            raise CheckpointError(
                f"{path}: refusing to load: the pickle {what}; only tensors, plain containers and "
                "argparse.Namespace are allowed, and nothing from the file was executed") from None
        raise CheckpointError(f"{path}: not a readable torch checkpoint (corrupt or truncated?): {first}") from None
    except (EOFError, zipfile.BadZipFile, OSError, ValueError, RuntimeError) as exc:
        if isinstance(exc, (FileNotFoundError, CheckpointError)):
            raise
        if isinstance(exc, RecursionError):
            raise CheckpointError(f"{path}: the pickle nests containers too deeply to read; not a "
                                  "MASt3R checkpoint") from None
        raise CheckpointError(f"{path}: not a readable torch checkpoint (corrupt or truncated?): "
                           f"{type(exc).__name__}: {exc}") from None


def check_tensors(sd: Mapping[str, Any], path: str) -> None:
    """Every entry is a finite, dense, floating-point CPU tensor with data (not meta, sparse
    or quantized); the error names the tensor, what was expected and what arrived.

    Raises:
        CheckpointError: a tensor of the wrong kind. NonFiniteError: NaN / inf weights.
    """
    for k, v in sd.items():
        if not isinstance(k, str):
            raise CheckpointError(f"{path}: state-dict key {k!r} is a {type(k).__name__}, expected str")
        if not isinstance(v, torch.Tensor):
            raise CheckpointError(f"{path}: {k!r} is a {type(v).__name__}, expected a tensor")
        if v.is_meta or v.device.type != "cpu":
            raise CheckpointError(f"{path}: tensor {k!r} has no data (device {v.device}); expected "
                                  "weights saved from a real model, not a meta/empty one")
        if v.layout != torch.strided or v.is_quantized:
            raise CheckpointError(f"{path}: tensor {k!r} is {v.layout}{' quantized' if v.is_quantized else ''}; "
                                  "expected an ordinary dense (strided) tensor")
        if not v.is_floating_point():
            raise CheckpointError(f"{path}: tensor {k!r} has dtype {v.dtype}; expected floating point weights")
        if v.numel() and not bool(torch.isfinite(v).all()):
            n = int((~torch.isfinite(v)).sum())
            raise NonFiniteError(f"{path}: tensor {k!r} {tuple(v.shape)} has {n} non-finite value(s) "
                                 "(NaN/inf); the weights are corrupt")


def _count_blocks(sd: Mapping[str, Any], prefix: str) -> int:
    """1 + the largest block index of ``prefix.N.*`` keys (0 when there are none)."""
    idx = [k[len(prefix):].split(".", 1)[0] for k in sd if k.startswith(prefix)]
    nums = [int(i) for i in idx if i.isdigit() and len(i) < 6]
    return max(nums) + 1 if nums else 0


def check_config_against_state_dict(cfg: Mast3rConfig, sd: Mapping[str, Any], path: str) -> None:
    """Compare depths and widths of ``cfg`` with the state-dict keys, before anything is
    built: a config deeper or wider than the weights is refused.

    Raises:
        CheckpointError: naming the field, the config's value and what the file holds.
    """
    found = {"enc_depth": _count_blocks(sd, "enc_blocks."), "dec_depth": _count_blocks(sd, "dec_blocks.")}
    for key, dim in (("patch_embed.proj.weight", "enc_embed_dim"), ("decoder_embed.weight", "dec_embed_dim")):
        if key in sd and getattr(sd[key], "ndim", 0) >= 1:
            found[dim] = int(sd[key].shape[0])
    # A config larger than the weights would build (allocate) more than the file holds: refuse
    # now. A smaller one builds a small network; the strict key check then names every key.
    for name, n in found.items():
        if n and getattr(cfg, name) > n:
            raise CheckpointError(f"{path}: config {name}={getattr(cfg, name)} but the weights hold "
                                  f"{n}; the configuration does not describe this file")


def _split_aliases(sd: Mapping[str, torch.Tensor], path: str) -> dict[str, torch.Tensor]:
    """Drop ``layer_rn.N`` alias keys after checking they equal their canonical tensor."""
    out = {k: v for k, v in sd.items() if not _ALIAS_RE.match(k)}
    for k, v in sd.items():
        if _ALIAS_RE.match(k):
            canon = canonical_key(k)
            if canon not in out:
                out[canon] = v
            elif out[canon].shape != v.shape or not torch.equal(out[canon], v):
                raise CheckpointError(f"{path}: alias {k!r} differs from {canon!r}; the file is inconsistent")
    return out


def _read_pth(path: Path, config: Mast3rConfig | None) -> Checkpoint:
    obj = _torch_load(path)
    constructor, overrides, extra = None, None, {}
    if isinstance(obj, Mapping) and "model" in obj:
        sd, args = obj["model"], obj.get("args")
        extra = {k: v for k, v in obj.items() if k in ("epoch", "best_so_far")}
        if args is not None:
            if not isinstance(args, argparse.Namespace):
                raise CheckpointError(f"{path}: 'args' is a {type(args).__name__}, expected argparse.Namespace")
            constructor = getattr(args, "model", None)
            overrides = getattr(args, "fixture_head_overrides", None)
    elif isinstance(obj, Mapping) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        sd = obj  # a bare state dict
    else:
        raise CheckpointError(f"{path}: expected a dict with a 'model' state dict (official container) "
                           f"or a bare state dict, got {type(obj).__name__}")
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{path}: 'model' is not a state dict of tensors")
    check_tensors(sd, str(path))
    sd = _split_aliases(sd, str(path))
    if config is None:
        if constructor is not None:
            if not isinstance(constructor, str):
                raise CheckpointError(f"{path}: args.model is not a string")
            try:
                kwargs = parse_constructor_string(constructor)
                if overrides is None:
                    overrides = head_constants_from_shapes(sd, str(path))
                config = config_from_constructor_kwargs(kwargs, overrides)
            except ValueError as exc:
                raise CheckpointError(f"{path}: args.model: {exc}") from None
        else:
            config = config_from_shapes(sd, str(path))
    return Checkpoint(config, dict(sd), str(path), constructor, extra)


def _read_safetensors(path: Path, config: Mast3rConfig | None) -> Checkpoint:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            sd = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise CheckpointError(f"{path}: not a readable safetensors file (corrupt or truncated?): {exc}") from None
    check_tensors(sd, str(path))
    sd = _split_aliases(sd, str(path))
    if config is None:
        config = _safetensors_config(path, metadata, sd)
    return Checkpoint(config, sd, str(path))


def _safetensors_config(path: Path, metadata: Mapping[str, str],
                        sd: Mapping[str, torch.Tensor]) -> Mast3rConfig:
    sources: list[tuple[str, Any]] = []
    if METADATA_CONFIG_KEY in metadata:
        sources.append((f"{path} metadata", metadata[METADATA_CONFIG_KEY]))
    for side in (path.with_suffix(".config.json"), path.parent / "config.json"):
        if side.is_file():
            sources.append((str(side), side.read_text()))
    for where, text in sources[:1]:
        try:
            data = json.loads(text)
            if "fixture_head_overrides" not in data and not set(HEAD_OVERRIDE_KEYS) & set(data):
                data = {**data, "fixture_head_overrides": head_constants_from_shapes(sd, str(path))}
            logger.info("config of %s from %s", path, where)
            return config_from_json(data)
        except (ValueError, TypeError, RecursionError) as exc:
            if isinstance(exc, RecursionError):
                exc = "JSON nested too deeply"  # type: ignore[assignment]
            raise CheckpointError(f"{where}: invalid MASt3R config: {exc}") from None
    logger.warning("%s: no config found beside it; inferring the architecture from tensor shapes", path)
    return config_from_shapes(sd, str(path))


def read_checkpoint(path: str | Path, config: Mast3rConfig | None = None) -> Checkpoint:
    """Read a ``.pth`` or ``.safetensors`` checkpoint (weights on CPU) and its config.

    Args:
        path: the file.
        config: overrides the config found in / beside the file.

    Raises:
        FileNotFoundError: no such file.
        RuntimeError: unreadable, unsafe, or not a MASt3R checkpoint.
    """
    path = Path(path)
    if path.is_dir():
        import errno

        raise IsADirectoryError(errno.EISDIR, "is a directory, expected a checkpoint file", str(path))
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix != ".safetensors" and path.suffix not in (".pth", ".pt", ".ckpt", ".bin"):
        with open(path, "rb") as f:
            magic = f.read(2)
        if magic not in (b"PK",) and magic[:1] != b"\x80":  # neither a torch zip nor a pickle
            return _read_safetensors(path, config)
    if path.suffix == ".safetensors":
        return _read_safetensors(path, config)
    return _read_pth(path, config)


# ----------------------------------------------------------------------------- into a model
def check_state_dict(sd: Mapping[str, torch.Tensor], model: Mast3rNet, path: str) -> None:
    """Strict key and shape check against ``model`` (aliases not required in ``sd``).

    Raises:
        RuntimeError: naming the first missing / unexpected / mis-shaped keys and the file.
    """
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items() if not _ALIAS_RE.match(k)}
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    wrong = [f"{k}: file {tuple(sd[k].shape)} vs model {expected[k]}"
             for k in expected if k in sd and tuple(sd[k].shape) != expected[k]]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s), first: {missing[:5]}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s), first: {unexpected[:5]}")
    if wrong:
        problems.append(f"{len(wrong)} shape mismatch(es), first: {wrong[:5]}")
    if problems:
        raise CheckpointError(f"{path}: checkpoint does not fit the MASt3R config "
                           f"({model.cfg}): " + "; ".join(problems))
    bad = [k for k, v in sd.items() if not v.is_floating_point()]
    if bad:
        raise CheckpointError(f"{path}: non-floating-point tensors {bad[:5]}")


def _with_aliases(sd: Mapping[str, torch.Tensor], model: Mast3rNet) -> dict[str, torch.Tensor]:
    out = dict(sd)
    for k in model.state_dict():
        if _ALIAS_RE.match(k):
            out[k] = out[canonical_key(k)]
    return out


def build_model(ckpt: Checkpoint, device: torch.device | str | None = None) -> Mast3rNet:
    """Build a float32 ``Mast3rNet`` holding the checkpoint's weights, in eval mode."""
    if "dec_blocks2.0.norm1.weight" not in ckpt.state_dict and any(
            k.startswith("dec_blocks.") for k in ckpt.state_dict):
        logger.warning("%s: no dec_blocks2.*; using dec_blocks.* for both decoders", ckpt.path)
        ckpt.state_dict.update({"dec_blocks2." + k[len("dec_blocks."):]: v
                                for k, v in list(ckpt.state_dict.items()) if k.startswith("dec_blocks.")})
    check_config_against_state_dict(ckpt.config, ckpt.state_dict, ckpt.path)
    with torch.device("meta"):
        model = Mast3rNet(ckpt.config)
    check_state_dict(ckpt.state_dict, model, ckpt.path)
    sd = {k: v.to(device=device or "cpu", dtype=torch.float32) for k, v in ckpt.state_dict.items()}
    model.load_state_dict(_with_aliases(sd, model), strict=True, assign=True)
    return model.eval().requires_grad_(False)


def load_model(path: str | Path, device: torch.device | str | None = None,
               config: Mast3rConfig | None = None) -> Mast3rNet:
    """Read a checkpoint and build the network on ``device`` (CPU by default)."""
    return build_model(read_checkpoint(path, config), device)


def save_safetensors(ckpt: Checkpoint, out: str | Path) -> None:
    """Write canonical keys (aliases recorded in metadata, as ``safetensors.torch.save_model``
    does) with our config in the ``mast3r_config`` metadata entry."""
    from safetensors.torch import save_file

    sd = {k: v.detach().to(torch.float32).contiguous() for k, v in ckpt.state_dict.items()}
    metadata = {"format": "pt", METADATA_CONFIG_KEY: json.dumps(ckpt.config.to_dict())}
    for head in ("downstream_head1", "downstream_head2"):
        for i in range(4):
            metadata[f"{head}.dpt.scratch.layer_rn.{i}.weight"] = f"{head}.dpt.scratch.layer{i + 1}_rn.weight"
    save_file(sd, str(out), metadata=metadata)


__all__ = [
    "Checkpoint", "build_model", "canonical_key", "check_state_dict", "config_from_constructor_kwargs",
    "config_from_json", "config_from_shapes", "head_constants_from_shapes", "load_model",
    "parse_constructor_string", "read_checkpoint", "save_safetensors",
]
