"""The MASt3R network (ViT encoder, two cross-attending decoders, catmlp+dpt heads).

Written from the prose specification in ``shared/mast3r_reference/README.md`` and the
MASt3R / DUSt3R / CroCo papers; no reference code. Module and parameter names equal the
official checkpoint's state-dict keys, so official weights load as they are.

Read bottom-up: helpers, RoPE, attention, blocks, DPT head, descriptor head, heads,
post-processing, then the network class.

Shapes: ``B`` batch, ``H, W`` image size (multiples of 16), ``h, w = H/16, W/16`` token
grid, ``N = h*w`` tokens, ``C`` channels, ``D`` decoder depth.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from mast3r_ros.config import config_from_dict

logger = logging.getLogger(__name__)

DESC_DIM = 24  # output_mode 'pts3d+desc24'
PATCH_SIZE = 16  # the DPT head assumes 16 whatever the trunk


# ----------------------------------------------------------------------------- config
# Ceilings of the architecture (the official ViT-L is 1024 wide, 24 deep, 16 heads): a file or
# a constructor string cannot make us build (or allocate) a network beyond these.
CONFIG_INT_BOUNDS: dict[str, tuple[int, int]] = {
    "enc_embed_dim": (4, 4096), "enc_depth": (1, 128), "enc_num_heads": (1, 128),
    "dec_embed_dim": (4, 4096), "dec_depth": (1, 128), "dec_num_heads": (1, 128),
    "patch_size": (1, 64), "dpt_feature_dim": (2, 4096), "dpt_last_dim": (1, 4096),
}
CONFIG_FLOAT_BOUNDS: dict[str, tuple[float, float]] = {  # open below, closed above
    "rope_base": (1.0, 1e6), "mlp_ratio": (0.0, 16.0), "layernorm_eps": (0.0, 0.1),
    "desc_mlp_hidden_dim_factor": (0.0, 64.0),
}


def _validate_config_fields(cfg: Any) -> None:
    """Types (an int is an int: no bools, no 2.9 -> 2) and ranges of every field."""
    import math
    import numbers

    from mast3r_ros.errors import ConfigError

    def bad(name: str, expected: str, value: Any) -> ConfigError:
        return ConfigError(f"Mast3rConfig.{name}: expected {expected}, got {value!r} "
                           f"({type(value).__name__})", argument=f"config.{name}")

    for name, (lo, hi) in CONFIG_INT_BOUNDS.items():
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise bad(name, f"an integer in [{lo}, {hi}]", v)
        if not lo <= int(v) <= hi:
            raise bad(name, f"an integer in [{lo}, {hi}]", v)
        object.__setattr__(cfg, name, int(v))
    for name, (lo, hi) in CONFIG_FLOAT_BOUNDS.items():
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(float(v)):
            raise bad(name, f"a finite number in ({lo:g}, {hi:g}]", v)
        if not lo < float(v) <= hi:
            why = " (a factor <= 0 gives an empty descriptor MLP)" if name == "desc_mlp_hidden_dim_factor" else ""
            raise bad(name, f"a finite number in ({lo:g}, {hi:g}]{why}", v)
        object.__setattr__(cfg, name, float(v))
    dims = cfg.dpt_layer_dims
    if (not isinstance(dims, (tuple, list)) or len(dims) != 4
            or any(isinstance(d, bool) or not isinstance(d, numbers.Integral) or not 1 <= int(d) <= 4096
                   for d in dims)):
        raise bad("dpt_layer_dims", "4 entries, integers in [1, 4096]", dims)
    object.__setattr__(cfg, "dpt_layer_dims", tuple(int(d) for d in dims))
    for name in ("enc", "dec"):
        dim = getattr(cfg, f"{name}_embed_dim")
        if int(cfg.mlp_ratio * dim) < 1:
            raise bad("mlp_ratio", f"a ratio giving at least 1 hidden unit for width {dim}", cfg.mlp_ratio)


@dataclass(frozen=True)
class Mast3rConfig:
    """Architecture of the network. Defaults = the official
    ``MASt3R_ViTLarge_BaseDecoder_512_catmlpdpt_metric`` checkpoint."""

    enc_embed_dim: int = 1024  # encoder width
    enc_depth: int = 24  # encoder blocks
    enc_num_heads: int = 16  # encoder attention heads (head dim must be divisible by 4)
    dec_embed_dim: int = 768  # decoder width
    dec_depth: int = 12  # decoder blocks per view
    dec_num_heads: int = 12  # decoder attention heads (head dim must be divisible by 4)
    patch_size: int = 16  # patch embedding size; only 16 is supported (DPT assumption)
    rope_base: float = 100.0  # 2D RoPE frequency base ('RoPE100')
    mlp_ratio: float = 4.0  # hidden width of the transformer MLPs, times the width
    layernorm_eps: float = 1e-6  # every LayerNorm
    dpt_feature_dim: int = 256  # DPT fusion width F (official constant; tiny fixtures 16)
    dpt_last_dim: int = 128  # DPT output head hidden width (official F/2)
    dpt_layer_dims: tuple[int, int, int, int] = (96, 192, 384, 768)  # DPT per-hook widths
    desc_mlp_hidden_dim_factor: float = 4.0  # desc MLP hidden = int(f * (enc + dec width))

    def __post_init__(self) -> None:
        from mast3r_ros.errors import ConfigError

        _validate_config_fields(self)
        if self.patch_size != PATCH_SIZE:
            raise ConfigError(f"patch_size must be {PATCH_SIZE} (the DPT head assumes it), "
                             f"got {self.patch_size}")
        for name in ("enc", "dec"):
            dim, heads = getattr(self, f"{name}_embed_dim"), getattr(self, f"{name}_num_heads")
            if heads <= 0 or dim % heads or (dim // heads) % 4:
                raise ConfigError(
                    f"{name}_embed_dim {dim} / {name}_num_heads {heads} must give an integer "
                    "head dim divisible by 4 (2D RoPE rotates pairs in a y half and an x half)")
        for name in ("enc_depth", "dec_depth", "dpt_feature_dim", "dpt_last_dim"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.dpt_feature_dim % 2:
            raise ConfigError(f"dpt_feature_dim must be even, got {self.dpt_feature_dim}")
        if self.desc_mlp_hidden_dim < 1:
            raise ConfigError("desc_mlp_hidden_dim_factor gives an empty descriptor MLP")

    @property
    def desc_mlp_hidden_dim(self) -> int:
        return int(self.desc_mlp_hidden_dim_factor * (self.enc_embed_dim + self.dec_embed_dim))

    @property
    def dpt_hooks(self) -> tuple[int, int, int, int]:
        """Indices into the (D+1)-long token list [encoder, decoder 1..D]."""
        d = self.dec_depth
        return (0, d * 2 // 4, d * 3 // 4, d)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "Mast3rConfig":
        """Build from a dict; unknown keys are an error that lists the valid ones."""
        return config_from_dict(cls, values)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["dpt_layer_dims"] = list(d["dpt_layer_dims"])
        return d

    @classmethod
    def tiny(cls) -> "Mast3rConfig":
        """The public fixture's tiny architecture (for tests and quick benchmarks)."""
        return cls(enc_embed_dim=48, enc_depth=2, enc_num_heads=3, dec_embed_dim=32,
                   dec_depth=10, dec_num_heads=2, dpt_feature_dim=16, dpt_last_dim=8,
                   dpt_layer_dims=(8, 12, 16, 24), desc_mlp_hidden_dim_factor=0.125)


# ----------------------------------------------------------------------------- RoPE
def token_positions(h: int, w: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(N, 2) int64 (row, col) of each token of an h x w grid, row-major."""
    rows = torch.arange(h, device=device).repeat_interleave(w)
    cols = torch.arange(w, device=device).repeat(h)
    return torch.stack((rows, cols), dim=-1)


def rope_tables(h: int, w: int, head_dim: int, base: float,
                device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables, each (N, head_dim) float32, for 2D RoPE on an h x w grid.

    The first half of a head vector is rotated by the row, the second by the column.
    Within a half of size Dh, angle k is pos / base^(2k/Dh), k < Dh/2, and the table
    repeats the Dh/2 angles twice (rotate-half convention).
    """
    half = head_dim // 2
    inv_freq = 1.0 / (base ** (torch.arange(0, half, 2, dtype=torch.float32, device=device) / half))
    pos = token_positions(h, w, device).to(torch.float32)  # (N, 2)
    ang_y = pos[:, 0:1] * inv_freq  # (N, half/2)
    ang_x = pos[:, 1:2] * inv_freq
    ang = torch.cat((ang_y, ang_y, ang_x, ang_x), dim=-1)  # (N, head_dim)
    return ang.cos(), ang.sin()


def apply_rope(t: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, heads, N, hd) by (N, hd) tables; rotate-half within each of the two halves."""
    a, b = t.unflatten(-1, (2, 2, t.shape[-1] // 4)).unbind(-2)  # each (B, heads, N, 2, hd/4)
    rot = torch.stack((-b, a), dim=-2).flatten(-3)  # [-t2, t1] per half
    return t * cos + rot * sin


class RopeCache:
    """Per (grid, head dim, device, dtype) cos/sin tables, computed once."""

    def __init__(self, base: float) -> None:
        self.base = base
        self._tables: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def get(self, h: int, w: int, head_dim: int, device: torch.device,
            dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        key = (h, w, head_dim, str(device), dtype)
        tables = self._tables.get(key)
        if tables is None:
            cos, sin = rope_tables(h, w, head_dim, self.base, device)
            tables = self._tables[key] = (cos.to(dtype), sin.to(dtype))
        return tables


@dataclass(frozen=True)
class Grid:
    """Token grid of one view plus its RoPE tables, shared by every attention layer."""

    h: int
    w: int
    cos: torch.Tensor  # (N, hd)
    sin: torch.Tensor  # (N, hd)


# ----------------------------------------------------------------------------- blocks
class Mlp(nn.Module):
    """Linear -> exact (erf) GELU -> Linear."""

    def __init__(self, dim: int, hidden: int, out: int | None = None) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, out or dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


def _heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, N, C) -> (B, heads, N, C/heads), heads owning contiguous channel ranges."""
    return x.unflatten(-1, (num_heads, -1)).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    """(B, heads, N, hd) -> (B, N, heads*hd)."""
    return x.transpose(1, 2).flatten(2)


class SelfAttention(nn.Module):
    """Fused qkv attention with 2D RoPE on q and k."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, grid: Grid) -> torch.Tensor:
        """x: (B, N, C) -> (B, N, C)."""
        q, k, v = (_heads(t, self.num_heads) for t in self.qkv(x).chunk(3, dim=-1))
        q, k = apply_rope(q, grid.cos, grid.sin), apply_rope(k, grid.cos, grid.sin)
        return self.proj(_merge(F.scaled_dot_product_attention(q, k, v)))


class CrossAttention(nn.Module):
    """Queries from one view (own positions), keys/values from the other (its positions)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.projq = nn.Linear(dim, dim)
        self.projk = nn.Linear(dim, dim)
        self.projv = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, y: torch.Tensor, grid_x: Grid, grid_y: Grid) -> torch.Tensor:
        """x: (B, Nx, C) queries; y: (B, Ny, C) keys and values -> (B, Nx, C)."""
        q = apply_rope(_heads(self.projq(x), self.num_heads), grid_x.cos, grid_x.sin)
        k = apply_rope(_heads(self.projk(y), self.num_heads), grid_y.cos, grid_y.sin)
        v = _heads(self.projv(y), self.num_heads)
        return self.proj(_merge(F.scaled_dot_product_attention(q, k, v)))


class EncoderBlock(nn.Module):
    """Pre-norm ViT block: x + Attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, eps: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = SelfAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, grid: Grid) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), grid)
        return x + self.mlp(self.norm2(x))


class DecoderBlock(nn.Module):
    """Self-attention, cross-attention to the other view (normalised by ``norm_y``), MLP."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, eps: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = SelfAttention(dim, num_heads)
        self.cross_attn = CrossAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.norm3 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.norm_y = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor, y: torch.Tensor, grid_x: Grid, grid_y: Grid) -> torch.Tensor:
        """x: (B, Nx, C) own view, y: (B, Ny, C) other view -> (B, Nx, C)."""
        x = x + self.attn(self.norm1(x), grid_x)
        x = x + self.cross_attn(self.norm2(x), self.norm_y(y), grid_x, grid_y)
        return x + self.mlp(self.norm3(x))


class PatchEmbed(nn.Module):
    """16x16 patches -> tokens (row-major), no absolute position embedding."""

    def __init__(self, dim: int, patch: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        """img: (B, 3, H, W) -> (B, N, C)."""
        return self.proj(img).flatten(2).transpose(1, 2)


# ----------------------------------------------------------------------------- DPT head
def tokens_to_map(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, N, C) row-major tokens -> (B, C, h, w) image in channels-last memory format.

    The heads run their convolutions channels-last by design: a token sequence already is
    an (h, w, C) image in memory, so this is a view when ``tokens`` is contiguous (no copy),
    and oneDNN / cuDNN pick their NHWC kernels (1.1x faster per head on CPU than NCHW,
    measured in benchmarks/RESULTS.md). ``transpose(1, 2).unflatten(2, (h, w))`` would give
    strides PyTorch does not recognise as channels-last at batch 1 and a silent NCHW copy.
    """
    x = tokens.unflatten(1, (h, w)).permute(0, 3, 1, 2)  # (B, C, h, w), strides of NHWC
    return x.contiguous(memory_format=torch.channels_last)  # a no-op unless tokens were strided


def _upsample2(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)


class ResidualConvUnit(nn.Module):
    """x + conv2(relu(conv1(relu(x)))), 3x3 convs with bias."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim, 3, padding=1)
        self.conv2 = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class FusionBlock(nn.Module):
    """out = main (+ RCU1(skip)); RCU2; bilinear x2 (align_corners); 1x1 conv."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.out_conv = nn.Conv2d(dim, dim, 1)
        self.resConfUnit1 = ResidualConvUnit(dim)  # unused by refinenet4 (single input)
        self.resConfUnit2 = ResidualConvUnit(dim)

    def forward(self, main: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        """main, skip: (B, F, h', w') -> (B, F, 2h', 2w')."""
        out = main if skip is None else main + self.resConfUnit1(skip)
        return self.out_conv(_upsample2(self.resConfUnit2(out)))


class Scratch(nn.Module):
    """Per-level 3x3 projections to F (``layerN_rn``, aliased as ``layer_rn.N-1``) and fusion."""

    def __init__(self, layer_dims: tuple[int, ...], dim: int) -> None:
        super().__init__()
        self.layer1_rn = nn.Conv2d(layer_dims[0], dim, 3, padding=1, bias=False)
        self.layer2_rn = nn.Conv2d(layer_dims[1], dim, 3, padding=1, bias=False)
        self.layer3_rn = nn.Conv2d(layer_dims[2], dim, 3, padding=1, bias=False)
        self.layer4_rn = nn.Conv2d(layer_dims[3], dim, 3, padding=1, bias=False)
        # The official state dict holds these four convs twice; keep the alias so its
        # keys match exactly (the module is shared, so there is one tensor per conv).
        self.layer_rn = nn.ModuleList([self.layer1_rn, self.layer2_rn, self.layer3_rn, self.layer4_rn])
        self.refinenet1 = FusionBlock(dim)
        self.refinenet2 = FusionBlock(dim)
        self.refinenet3 = FusionBlock(dim)
        self.refinenet4 = FusionBlock(dim)


class DPT(nn.Module):
    """DPT pointmap head: 4 hooked token sets -> (B, 4, H, W) (xyz + conf logits)."""

    def __init__(self, cfg: Mast3rConfig) -> None:
        super().__init__()
        L, Fd = cfg.dpt_layer_dims, cfg.dpt_feature_dim
        self.hooks = cfg.dpt_hooks
        self.scratch = Scratch(L, Fd)
        self.head = nn.Sequential(
            nn.Conv2d(Fd, Fd // 2, 3, padding=1),
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
            nn.Conv2d(Fd // 2, cfg.dpt_last_dim, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(cfg.dpt_last_dim, 4, 1),
        )
        dims = (cfg.enc_embed_dim, cfg.dec_embed_dim, cfg.dec_embed_dim, cfg.dec_embed_dim)
        self.act_postprocess = nn.ModuleList([
            nn.Sequential(nn.Conv2d(dims[0], L[0], 1), nn.ConvTranspose2d(L[0], L[0], 4, stride=4)),
            nn.Sequential(nn.Conv2d(dims[1], L[1], 1), nn.ConvTranspose2d(L[1], L[1], 2, stride=2)),
            nn.Sequential(nn.Conv2d(dims[2], L[2], 1)),
            nn.Sequential(nn.Conv2d(dims[3], L[3], 1), nn.Conv2d(L[3], L[3], 3, stride=2, padding=1)),
        ])

    def forward(self, tokens: list[torch.Tensor], h: int, w: int) -> torch.Tensor:
        """tokens: D+1 entries (B, N, C_i); returns (B, 4, 16h, 16w)."""
        s = self.scratch
        levels = []
        for i, (hook, post, rn) in enumerate(zip(self.hooks, self.act_postprocess, s.layer_rn)):
            x = tokens_to_map(tokens[hook], h, w)  # (B, C, h, w), channels-last
            levels.append(rn(post(x)))  # (B, F, 4h|2h|h|ceil(h/2), ...)
        l1, l2, l3, l4 = levels
        path4 = s.refinenet4(l4)[:, :, : l3.shape[2], : l3.shape[3]]  # crop odd grids
        path3 = s.refinenet3(path4, l3)
        path2 = s.refinenet2(path3, l2)
        path1 = s.refinenet1(path2, l1)  # (B, F, 8h, 8w)
        return self.head(path1)  # (B, 4, 16h, 16w)


# ----------------------------------------------------------------------------- heads
class DescriptorMlp(nn.Module):
    """[encoder, last decoder] tokens -> 25 channels per pixel via a 16x16 pixel shuffle."""

    def __init__(self, cfg: Mast3rConfig) -> None:
        super().__init__()
        in_dim = cfg.enc_embed_dim + cfg.dec_embed_dim
        out = (DESC_DIM + 1) * PATCH_SIZE**2
        self.fc1 = nn.Linear(in_dim, cfg.desc_mlp_hidden_dim)
        self.fc2 = nn.Linear(cfg.desc_mlp_hidden_dim, out)

    def forward(self, enc: torch.Tensor, dec: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """enc: (B, N, C_enc), dec: (B, N, C_dec) -> (B, 25, 16h, 16w)."""
        x = self.fc2(F.gelu(self.fc1(torch.cat((enc, dec), dim=-1))))  # (B, N, 6400)
        # Pixel shuffle by 16 in one copy: channel c of pixel (16i + a, 16j + b) is
        # feature c*256 + a*16 + b of token (i, j).
        # The result is laid out channels-last like the DPT output, so the concatenation in
        # ``Head`` and the (B, H, W, 29) view in ``postprocess`` need no further copy.
        B, r = x.shape[0], PATCH_SIZE
        x = x.view(B, h, w, DESC_DIM + 1, r, r).permute(0, 1, 4, 2, 5, 3)  # (B, h, 16, w, 16, 25)
        x = x.reshape(B, h * r, w * r, DESC_DIM + 1)  # the one copy: (B, H, W, 25)
        return x.permute(0, 3, 1, 2)  # (B, 25, H, W), channels-last strides


class Head(nn.Module):
    """catmlp+dpt head of one view: (B, 29, H, W) raw map (xyz, conf, desc, desc_conf)."""

    def __init__(self, cfg: Mast3rConfig) -> None:
        super().__init__()
        self.dpt = DPT(cfg)
        self.head_local_features = DescriptorMlp(cfg)

    def forward(self, tokens: list[torch.Tensor], h: int, w: int) -> torch.Tensor:
        """tokens: [encoder (B, N, C_enc), decoder 1..D (B, N, C_dec)] -> (B, 29, 16h, 16w)."""
        dpt = self.dpt(tokens, h, w)
        desc = self.head_local_features(tokens[0], tokens[-1], h, w)
        return torch.cat((dpt, desc), dim=1)


@dataclass
class Mast3rViewOutput:
    """Post-processed prediction of one view, batched.

    Attributes:
        pts3d: (B, H, W, 3) points in view 1's frame.
        conf: (B, H, W) pointmap confidence, >= 1.
        desc: (B, H, W, 24) unit-norm descriptors.
        desc_conf: (B, H, W) descriptor confidence, > 0.
    """

    pts3d: torch.Tensor
    conf: torch.Tensor
    desc: torch.Tensor
    desc_conf: torch.Tensor


def postprocess(raw: torch.Tensor) -> Mast3rViewOutput:
    """(B, 29, H, W) raw head map -> activations (metric depth via expm1, 1+exp, norm, exp)."""
    x = raw.permute(0, 2, 3, 1)  # (B, H, W, 29)
    xyz = x[..., 0:3]
    d = xyz.norm(dim=-1, keepdim=True)
    pts3d = xyz / d.clamp(min=1e-8) * torch.expm1(d)
    desc = x[..., 4:4 + DESC_DIM]
    desc = desc / desc.norm(dim=-1, keepdim=True)
    return Mast3rViewOutput(pts3d=pts3d, conf=1 + x[..., 3].exp(), desc=desc,
                            desc_conf=x[..., 4 + DESC_DIM].exp())


@dataclass
class Mast3rOutput:
    """Network output for a batch of pairs, with optional intermediates.

    Attributes:
        view1, view2: post-processed predictions (view2's ``pts3d`` is in view 1's frame).
        enc1, enc2: (B, N, C_enc) encoder tokens after ``enc_norm``.
        dec1, dec2: D entries (B, N, C_dec), decoder layer outputs (last after ``dec_norm``).
        raw1, raw2: (B, 29, H, W) head outputs before post-processing.
    """

    view1: Mast3rViewOutput
    view2: Mast3rViewOutput
    enc1: torch.Tensor
    enc2: torch.Tensor
    dec1: list[torch.Tensor]
    dec2: list[torch.Tensor]
    raw1: torch.Tensor
    raw2: torch.Tensor


# ----------------------------------------------------------------------------- network
class Mast3rNet(nn.Module):
    """MASt3R: shared ViT encoder, two decoders exchanging cross-attention, two heads."""

    def __init__(self, cfg: Mast3rConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or Mast3rConfig()
        self.cfg = cfg
        mk_enc = lambda: EncoderBlock(cfg.enc_embed_dim, cfg.enc_num_heads, cfg.mlp_ratio, cfg.layernorm_eps)  # noqa: E731
        mk_dec = lambda: DecoderBlock(cfg.dec_embed_dim, cfg.dec_num_heads, cfg.mlp_ratio, cfg.layernorm_eps)  # noqa: E731
        self.mask_token = nn.Parameter(torch.zeros(1, 1, cfg.dec_embed_dim))  # unused (training)
        self.patch_embed = PatchEmbed(cfg.enc_embed_dim, cfg.patch_size)
        self.enc_blocks = nn.ModuleList([mk_enc() for _ in range(cfg.enc_depth)])
        self.enc_norm = nn.LayerNorm(cfg.enc_embed_dim, eps=cfg.layernorm_eps)
        self.decoder_embed = nn.Linear(cfg.enc_embed_dim, cfg.dec_embed_dim)
        self.dec_blocks = nn.ModuleList([mk_dec() for _ in range(cfg.dec_depth)])
        self.dec_norm = nn.LayerNorm(cfg.dec_embed_dim, eps=cfg.layernorm_eps)
        self.dec_blocks2 = nn.ModuleList([mk_dec() for _ in range(cfg.dec_depth)])
        self.downstream_head1 = Head(cfg)
        self.downstream_head2 = Head(cfg)
        self._rope = RopeCache(cfg.rope_base)

    # -- pieces, usable on their own (the engine caches encoder outputs) --------------
    def grid(self, h: int, w: int, head_dim: int, like: torch.Tensor) -> Grid:
        cos, sin = self._rope.get(h, w, head_dim, like.device, like.dtype)
        return Grid(h, w, cos, sin)

    def encode(self, img: torch.Tensor) -> torch.Tensor:
        """img: (B, 3, H, W) normalised to [-1, 1] -> (B, N, C_enc) tokens after ``enc_norm``."""
        H, W = img.shape[-2:]
        if H % PATCH_SIZE or W % PATCH_SIZE:
            raise ValueError(f"image size {H}x{W} (HxW) is not a multiple of {PATCH_SIZE}")
        x = self.patch_embed(img)
        grid = self.grid(H // PATCH_SIZE, W // PATCH_SIZE,
                         self.cfg.enc_embed_dim // self.cfg.enc_num_heads, x)
        for blk in self.enc_blocks:
            x = blk(x, grid)
        return self.enc_norm(x)

    def decode(self, enc1: torch.Tensor, enc2: torch.Tensor, hw1: tuple[int, int],
               hw2: tuple[int, int]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Both decoders, updated simultaneously.

        Args:
            enc1: (B, N1, C_enc) encoder tokens of view 1 on an hw1 token grid.
            enc2: (B, N2, C_enc) encoder tokens of view 2 on an hw2 token grid.

        Returns:
            dec1, dec2: D entries (B, N_i, C_dec); the last has ``dec_norm`` applied.
        """
        hd = self.cfg.dec_embed_dim // self.cfg.dec_num_heads
        f1, f2 = self.decoder_embed(enc1), self.decoder_embed(enc2)
        g1, g2 = self.grid(*hw1, hd, f1), self.grid(*hw2, hd, f2)
        dec1, dec2 = [], []
        for blk1, blk2 in zip(self.dec_blocks, self.dec_blocks2):
            f1, f2 = blk1(f1, f2, g1, g2), blk2(f2, f1, g2, g1)
            dec1.append(f1)
            dec2.append(f2)
        dec1[-1], dec2[-1] = self.dec_norm(dec1[-1]), self.dec_norm(dec2[-1])
        return dec1, dec2

    def heads(self, enc1: torch.Tensor, enc2: torch.Tensor, dec1: list[torch.Tensor],
              dec2: list[torch.Tensor], hw1: tuple[int, int],
              hw2: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw (B, 29, H_i, W_i) head maps of both views, computed in float32."""
        with torch.autocast(device_type=enc1.device.type, enabled=False):
            f32 = lambda ts: [t.float() for t in ts]  # noqa: E731
            raw1 = self.downstream_head1(f32([enc1, *dec1]), *hw1)
            raw2 = self.downstream_head2(f32([enc2, *dec2]), *hw2)
        return raw1, raw2

    def forward(self, img1: torch.Tensor, img2: torch.Tensor) -> Mast3rOutput:
        """Predict a batch of pairs.

        Args:
            img1: (B, 3, H1, W1) view 1, normalised to [-1, 1], sides multiples of 16.
            img2: (B, 3, H2, W2) view 2; may differ in size from view 1.

        Returns:
            ``Mast3rOutput``: per view pts3d (B, H, W, 3) in view 1's frame, conf (B, H, W),
            desc (B, H, W, 24), desc_conf (B, H, W), and the intermediates.
        """
        hw1 = (img1.shape[-2] // PATCH_SIZE, img1.shape[-1] // PATCH_SIZE)
        hw2 = (img2.shape[-2] // PATCH_SIZE, img2.shape[-1] // PATCH_SIZE)
        if img1.shape[-2:] == img2.shape[-2:]:
            enc1, enc2 = self.encode(torch.cat((img1, img2))).chunk(2)
        else:
            enc1, enc2 = self.encode(img1), self.encode(img2)
        dec1, dec2 = self.decode(enc1, enc2, hw1, hw2)
        raw1, raw2 = self.heads(enc1, enc2, dec1, dec2, hw1, hw2)
        return Mast3rOutput(postprocess(raw1), postprocess(raw2), enc1, enc2, dec1, dec2, raw1, raw2)


def count_parameters(model: nn.Module) -> int:
    """Distinct parameters (aliases counted once)."""
    return sum(p.numel() for p in model.parameters())

