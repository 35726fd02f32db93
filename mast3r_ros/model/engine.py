"""``Mast3rEngine``: the real network behind the ``PairEngine`` contract.

Encode each image once (tracking decodes keyframe x new frame without re-encoding the
keyframe), decode pairs from cached encoder tokens, batch pairs of equal shapes. Pairs
whose views differ in size or orientation (portrait with landscape) are supported: each
view keeps its own token grid and RoPE positions.

Precision: float32 everywhere by default. With ``dtype=torch.bfloat16`` or ``float16``
(meant for CUDA) the trunk (patch embedding, encoder, decoders) runs in that dtype and the
heads and post-processing in float32. ``tf32=True`` lets CUDA matmuls/convs use TF32.

Thread safety: one engine may be shared by several nodes in one process; network calls
are serialised by a lock (the GPU would serialise them anyway).
"""
from __future__ import annotations

import logging
import threading
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .checkpoint import load_model
from .network import PATCH_SIZE, Mast3rNet, Mast3rViewOutput, postprocess
from .preprocess import preprocess_image
from .types import EncodedView, ImageTransform, PairPrediction, ViewPrediction

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
          "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """'float32' / 'bf16' / torch.float16 ... -> torch dtype (ValueError if unsupported)."""
    if isinstance(dtype, torch.dtype):
        if dtype in DTYPES.values():
            return dtype
    elif str(dtype).lower() in DTYPES:
        return DTYPES[str(dtype).lower()]
    raise ValueError(f"unsupported dtype {dtype!r}; choose one of {sorted(DTYPES)}")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """None -> CUDA when available, else CPU (logged); otherwise checked."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        logger.info("device not given; using %s", device)
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device} requested but CUDA is not available; use --device cpu")
    return device


@dataclass(frozen=True)
class EncoderFeatures:
    """What ``Mast3rEngine.encode`` caches for an image.

    Attributes:
        tokens: (1, N, C_enc) encoder tokens after ``enc_norm``, trunk dtype, engine device.
        grid: (h, w) token grid, N = h * w.
    """

    tokens: torch.Tensor
    grid: tuple[int, int]


_TRUNK = ("patch_embed", "enc_blocks", "enc_norm", "decoder_embed", "dec_blocks", "dec_blocks2", "dec_norm")


class Mast3rEngine:
    """MASt3R inference implementing ``PairEngine``.

    Args:
        model: the network (weights loaded).
        device: torch device; None picks CUDA when available, else CPU.
        dtype: trunk dtype (float32 default; bf16/fp16 for CUDA). Heads stay float32.
        tf32: allow TF32 matmuls/convolutions on CUDA (process-wide torch setting).
        size: long side of the network input (reference preprocessing).
        square_ok: keep square images square instead of cropping to 3:4.
        resize: False feeds images as they are (sides must be multiples of 16).
        max_batch: most pairs per network call in ``decode_batch``.
    """

    def __init__(self, model: Mast3rNet, *, device: str | torch.device | None = None,
                 dtype: str | torch.dtype = torch.float32, tf32: bool = False, size: int = 512,
                 square_ok: bool = False, resize: bool = True, max_batch: int = 8) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype)
        if self.device.type == "cpu" and self.dtype != torch.float32:
            logger.warning("%s trunk on CPU is slow and only meant for tests; float32 is the CPU default",
                           self.dtype)
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
        self.size, self.square_ok, self.resize, self.max_batch = size, square_ok, resize, max_batch
        self.model = model.eval().requires_grad_(False).to(self.device)
        for name in _TRUNK:
            getattr(self.model, name).to(self.dtype)
        self._lock = threading.Lock()
        self.checkpoint_path: Path | None = None

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device | None = None,
                        dtype: str | torch.dtype = torch.float32, **kwargs) -> "Mast3rEngine":
        """Load a ``.pth`` / ``.safetensors`` checkpoint (see ``checkpoint.read_checkpoint``)."""
        engine = cls(load_model(path), device=device, dtype=dtype, **kwargs)
        engine.checkpoint_path = Path(path)  # identity for saved maps (reloc.engine_identity)
        return engine

    @property
    def config(self):
        return self.model.cfg

    # -- encoding ---------------------------------------------------------------------
    def preprocess(self, image: np.ndarray) -> tuple[torch.Tensor, ImageTransform]:
        """(H, W, 3) uint8 RGB -> (1, 3, h, w) float32 network input and its transform."""
        return preprocess_image(image, size=self.size, square_ok=self.square_ok, resize=self.resize)

    def encode(self, image: np.ndarray, *, frame_id: str | None = None) -> EncodedView:
        """Encode an (H, W, 3) uint8 RGB image once; reuse the result in any number of pairs."""
        img, transform = self.preprocess(image)
        return self.encode_tensor(img, transform, frame_id=frame_id)

    def encode_batch(self, images: Sequence[np.ndarray],
                     frame_ids: Sequence[str | None] | None = None) -> list[EncodedView]:
        """Encode several images; those of equal network size share one network call."""
        frame_ids = list(frame_ids) if frame_ids is not None else [None] * len(images)
        if len(frame_ids) != len(images):
            raise ValueError(f"{len(images)} images but {len(frame_ids)} frame ids")
        prepped = [self.preprocess(im) for im in images]
        return self.encode_tensors([p[0] for p in prepped], [p[1] for p in prepped], frame_ids)

    def encode_tensor(self, img: torch.Tensor, transform: ImageTransform | None = None, *,
                      frame_id: str | None = None) -> EncodedView:
        """Encode an already normalised (1, 3, H, W) image (e.g. a fixture's stored input)."""
        return self.encode_tensors([img], [transform], [frame_id])[0]

    def encode_tensors(self, imgs: Sequence[torch.Tensor], transforms: Sequence[ImageTransform | None],
                       frame_ids: Sequence[str | None]) -> list[EncodedView]:
        """Encode normalised (1, 3, H, W) images, batching equal sizes."""
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, img in enumerate(imgs):
            if img.ndim != 4 or img.shape[:2] != (1, 3):
                raise ValueError(f"image tensor must be (1, 3, H, W), got {tuple(img.shape)}")
            H, W = img.shape[-2:]
            if H % PATCH_SIZE or W % PATCH_SIZE:
                raise ValueError(f"image size {H}x{W} (HxW) is not a multiple of {PATCH_SIZE}")
            groups[(H, W)].append(i)
        out: list[EncodedView | None] = [None] * len(imgs)
        for (H, W), idx in groups.items():
            for start in range(0, len(idx), self.max_batch):
                chunk = idx[start:start + self.max_batch]
                batch = torch.cat([imgs[i] for i in chunk]).to(self.device, self.dtype)
                with self._lock, torch.inference_mode():
                    tokens = self.model.encode(batch)  # (b, N, C_enc)
                for j, i in enumerate(chunk):
                    tf = transforms[i] or ImageTransform.identity(H, W)
                    out[i] = EncodedView(EncoderFeatures(tokens[j:j + 1], (H // PATCH_SIZE, W // PATCH_SIZE)),
                                         tf, frame_ids[i])
        return out  # type: ignore[return-value]

    # -- decoding ---------------------------------------------------------------------
    @staticmethod
    def _features(view: EncodedView) -> EncoderFeatures:
        if not isinstance(view.features, EncoderFeatures):
            raise ValueError(f"EncodedView was not produced by Mast3rEngine.encode "
                             f"(features are {type(view.features).__name__})")
        return view.features

    def decode(self, view1: EncodedView, view2: EncodedView) -> PairPrediction:
        """Predict the ordered pair (view1, view2) from cached encodings."""
        return self.decode_batch([(view1, view2)])[0]

    def decode_batch(self, pairs: Sequence[tuple[EncodedView, EncodedView]]) -> list[PairPrediction]:
        """Predict many pairs; pairs with equal (view1, view2) grids share network calls."""
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, (v1, v2) in enumerate(pairs):
            f1, f2 = self._features(v1), self._features(v2)
            groups[(f1.grid, f2.grid, f1.tokens.dtype)].append(i)
        out: list[PairPrediction | None] = [None] * len(pairs)
        for (hw1, hw2, _), idx in groups.items():
            for start in range(0, len(idx), self.max_batch):
                chunk = idx[start:start + self.max_batch]
                enc1 = torch.cat([self._features(pairs[i][0]).tokens for i in chunk])  # (b, N1, C)
                enc2 = torch.cat([self._features(pairs[i][1]).tokens for i in chunk])  # (b, N2, C)
                p1, p2 = self._decode_tokens(enc1, enc2, hw1, hw2)
                for j, i in enumerate(chunk):
                    out[i] = PairPrediction(_view(p1, j, pairs[i][0].transform),
                                            _view(p2, j, pairs[i][1].transform))
        return out  # type: ignore[return-value]

    def _decode_tokens(self, enc1: torch.Tensor, enc2: torch.Tensor, hw1: tuple[int, int],
                       hw2: tuple[int, int]) -> tuple[Mast3rViewOutput, Mast3rViewOutput]:
        with self._lock, torch.inference_mode():
            dec1, dec2 = self.model.decode(enc1, enc2, hw1, hw2)
            raw1, raw2 = self.model.heads(enc1, enc2, dec1, dec2, hw1, hw2)
        # Post-process outside inference mode so callers get ordinary tensors: inference
        # tensors cannot be modified in place or saved for backward (e.g. by a pose
        # optimiser that treats the pointmaps as constants).
        with torch.no_grad():
            return postprocess(raw1), postprocess(raw2)

    # -- retrieval ----------------------------------------------------------------------
    def global_descriptor(self, view: EncodedView) -> np.ndarray:
        """(C_enc,) float32 unit-norm descriptor of a view, training-free.

        Each encoder token is L2-normalised (so a few large-norm patches do not dominate),
        the tokens are mean-pooled, the mean goes through a signed square root (power
        normalisation, which damps the components every image shares) and is L2-normalised
        again. The inner product of two such vectors is the retrieval score.
        """
        tokens = self._features(view).tokens  # (1, N, C)
        with torch.no_grad():
            t = torch.nn.functional.normalize(tokens[0].float(), dim=-1)  # (N, C)
            g = t.mean(dim=0)                                             # (C,)
            g = torch.sign(g) * torch.sqrt(torch.abs(g))
            g = torch.nn.functional.normalize(g, dim=0)
        return g.cpu().numpy().astype(np.float32)

    # -- convenience ------------------------------------------------------------------
    def predict(self, image1: np.ndarray, image2: np.ndarray) -> PairPrediction:
        """Encode two (H, W, 3) uint8 RGB images and decode the ordered pair."""
        v1, v2 = self.encode_batch([image1, image2])
        return self.decode(v1, v2)


def _view(out: Mast3rViewOutput, j: int, transform: ImageTransform) -> ViewPrediction:
    return ViewPrediction(pts3d=out.pts3d[j], conf=out.conf[j], desc=out.desc[j],
                          desc_conf=out.desc_conf[j], transform=transform)
