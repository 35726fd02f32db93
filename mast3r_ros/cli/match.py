"""``mast3r-ros match``: fast reciprocal matching of an image pair (network or stored
descriptors) -> ``xy1``, ``xy2`` (int64 (N, 2), original-image pixels) in an .npz."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from mast3r_ros.cli._common import check_output_path, engine_from_args, load_rgb, save_npz

logger = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "match", help="match two images with fast reciprocal matching and write xy1/xy2 (.npz)",
        description="Match IMG1 and IMG2 with MASt3R descriptors (--checkpoint), or match the "
                    "descriptor maps of an `infer` output (--desc, no network). Writes xy1, xy2: "
                    "int64 (N, 2) (x, y) pixels of the original images (network pixels with --desc "
                    "and no images).")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="MASt3R .pth or .safetensors checkpoint")
    src.add_argument("--desc", help="an `infer` .npz (view1_desc, view2_desc, ...); no network")
    p.add_argument("img1", nargs="?", help="first image (required with --checkpoint; with --desc "
                                           "it maps matches to original pixels)")
    p.add_argument("img2", nargs="?", help="second image")
    p.add_argument("--out", required=True, help="output file with xy1, xy2 (NumPy .npz archive, written under exactly this name)")
    p.add_argument("--no-resize", action="store_true",
                   help="images were/are fed as they are (sides multiples of 16)")
    p.add_argument("--size", type=int, default=512, help="network long side")
    p.add_argument("--subsample", type=int, default=8, help="FRM seed grid step")
    p.add_argument("--border", type=int, default=3, help="border filter in pixels")
    p.add_argument("--min-desc-conf", type=float, default=0.0, help="drop matches below this desc_conf")
    p.add_argument("--backend", choices=["torch", "faiss"], default="torch", help="NN search backend")
    p.add_argument("--coarse-to-fine", action="store_true",
                   help="refine with network-size crops at full resolution (needs --checkpoint)")
    p.add_argument("--viz", help="also write a picture of the matches (.png/.jpg)")
    p.add_argument("--max-viz", type=int, default=300, help="at most this many lines in --viz")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--dtype", default="float32", help="trunk dtype (float32, bfloat16, float16)")
    p.set_defaults(func=run)


def _frm_config(args: argparse.Namespace):
    from mast3r_ros.matching import FRMConfig

    return FRMConfig(subsample=args.subsample, border=args.border,
                     min_desc_conf=args.min_desc_conf, backend=args.backend)


def _load_desc(path: str) -> dict[str, np.ndarray]:
    """The descriptor arrays of an `infer` .npz; shapes and sizes checked from the headers
    before anything is decompressed (``limits.npz_member_shapes``)."""
    from mast3r_ros.errors import InputError
    from mast3r_ros.limits import MAX_DESC_DIM, MAX_DESC_PIXELS, load_npz, npz_member_shapes

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"descriptor file not found: {p}")
    shapes = npz_member_shapes(p)
    keys = ("view1_desc", "view2_desc", "view1_desc_conf", "view2_desc_conf")
    for k in keys[:2]:
        if k not in shapes:
            raise InputError(f"{p} has no '{k}' (keys: {sorted(shapes)}); pass an `infer` output",
                             argument="--desc")
        shape, dtype = shapes[k]
        if len(shape) != 3:
            raise InputError(f"{p}:{k} must be (H, W, D) without batch dimension, got {shape}",
                             argument="--desc")
        if min(shape) < 1 or shape[0] * shape[1] > MAX_DESC_PIXELS or not 1 <= shape[2] <= MAX_DESC_DIM:
            raise InputError(f"{p}:{k} has shape {shape}; expected H, W >= 1, H*W <= {MAX_DESC_PIXELS:,} and "
                             f"1 <= D <= {MAX_DESC_DIM}", argument="--desc")
        if dtype.kind != "f":
            raise InputError(f"{p}:{k} must be floating point, got {dtype}", argument="--desc")
    for k, d in zip(keys[2:], keys[:2]):
        if k in shapes and (shapes[k][0] != shapes[d][0][:2] or shapes[k][1].kind != "f"):
            raise InputError(f"{p}:{k} must be float (H, W) = {shapes[d][0][:2]}, got "
                             f"{shapes[k][0]} {shapes[k][1]}", argument="--desc")
    # native byte order, float32 (torch refuses big-endian arrays with a message naming nothing)
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in load_npz(p, keys).items()}


def match_desc_file(args: argparse.Namespace, images: list[np.ndarray] | None):
    """Matches from an `infer` .npz; transforms from the images when given."""
    import torch

    from mast3r_ros.matching import match_descriptors
    from mast3r_ros.model.types import ImageTransform

    a = _load_desc(args.desc)
    d1, d2 = torch.from_numpy(a["view1_desc"]), torch.from_numpy(a["view2_desc"])
    tfs = [ImageTransform.identity(*d1.shape[:2]), ImageTransform.identity(*d2.shape[:2])]
    if images is not None and not args.no_resize:
        from mast3r_ros.model.preprocess import compute_transform

        tfs = [compute_transform(*im.shape[:2], size=args.size) for im in images]
    for k, (tf, d) in enumerate(zip(tfs, (d1, d2)), 1):
        if tuple(tf.network_size) != tuple(d.shape[:2]):
            raise ValueError(f"view{k}_desc is {tuple(d.shape[:2])} but image {k} maps to network "
                             f"size {tuple(tf.network_size)} (check --size / --no-resize)")
    conf = lambda k: torch.from_numpy(a[k]) if k in a else None  # noqa: E731
    return match_descriptors(d1, d2, _frm_config(args), desc_conf1=conf("view1_desc_conf"),
                             desc_conf2=conf("view2_desc_conf"), transform1=tfs[0], transform2=tfs[1])


def draw_matches(img1: np.ndarray, img2: np.ndarray, xy1: np.ndarray, xy2: np.ndarray,
                 max_lines: int = 300) -> np.ndarray:
    """Side-by-side (H, W1 + W2, 3) uint8 RGB picture with up to ``max_lines`` match lines."""
    import cv2

    h = max(img1.shape[0], img2.shape[0])
    canvas = np.zeros((h, img1.shape[1] + img2.shape[1], 3), np.uint8)
    canvas[: img1.shape[0], : img1.shape[1]] = img1
    canvas[: img2.shape[0], img1.shape[1]:] = img2
    n = len(xy1)
    sel = np.linspace(0, n - 1, min(n, max_lines)).astype(int) if n else np.zeros(0, int)
    rng = np.random.default_rng(0)
    for i in sel:
        c = tuple(int(v) for v in rng.integers(64, 256, 3))
        p1 = (int(xy1[i, 0]), int(xy1[i, 1]))
        p2 = (int(xy2[i, 0]) + img1.shape[1], int(xy2[i, 1]))
        cv2.line(canvas, p1, p2, c, 1, cv2.LINE_AA)
        cv2.circle(canvas, p1, 2, c, -1)
        cv2.circle(canvas, p2, 2, c, -1)
    return canvas


def run(args: argparse.Namespace) -> int:
    if (args.img1 is None) != (args.img2 is None):
        raise ValueError("give both IMG1 and IMG2, or neither (only with --desc)")
    if args.subsample < 1 or args.border < 0:
        raise ValueError(f"--subsample must be >= 1 and --border >= 0, got {args.subsample}, {args.border}")
    images = [load_rgb(args.img1, "IMG1"), load_rgb(args.img2, "IMG2")] if args.img1 else None
    if args.checkpoint and images is None:
        raise ValueError("--checkpoint needs IMG1 and IMG2")
    if args.coarse_to_fine and args.desc:
        raise ValueError("--coarse-to-fine runs the network on crops; use --checkpoint, not --desc")
    if args.coarse_to_fine and args.no_resize:
        raise ValueError("--coarse-to-fine is for images larger than the network input; drop --no-resize")
    if args.viz and images is None:
        raise ValueError("--viz needs IMG1 and IMG2")
    out = check_output_path(args.out, "--out")
    check_output_path(args.viz, "--viz", image_writer=True)

    if args.desc:
        m = match_desc_file(args, images)
        xy1, xy2 = m.xy1, m.xy2
    else:
        from mast3r_ros.matching import match_prediction
        engine = engine_from_args(args, (args.img1, args.img2), images)
        if args.coarse_to_fine:
            from mast3r_ros.matching.coarse_to_fine import CoarseToFineConfig, coarse_to_fine_match

            win = (args.size * 3 // 4 // 16 * 16, args.size // 16 * 16)
            cfg = CoarseToFineConfig(window_size=win, coarse=_frm_config(args), fine=_frm_config(args))
            r = coarse_to_fine_match(engine, images[0], images[1], cfg)
            xy1, xy2 = r.xy1, r.xy2
            logger.info("coarse-to-fine: %d coarse matches, %d window pairs", len(r.coarse), len(r.window_pairs))
        else:
            from mast3r_ros.cli.infer import check_finite_arrays, prediction_arrays

            v1, v2 = engine.encode(images[0]), engine.encode(images[1])
            pred = engine.decode(v1, v2)
            check_finite_arrays(prediction_arrays(pred), "the network output")
            m = match_prediction(pred, _frm_config(args))
            xy1, xy2 = m.xy1, m.xy2
    xy1 = np.rint(xy1).astype(np.int64).reshape(-1, 2)
    xy2 = np.rint(xy2).astype(np.int64).reshape(-1, 2)
    save_npz(out, xy1=xy1, xy2=xy2)
    logger.info("wrote %d matches to %s", len(xy1), out)
    if args.viz:
        import cv2

        pic = draw_matches(images[0], images[1], xy1, xy2, args.max_viz)
        if not cv2.imwrite(str(args.viz), cv2.cvtColor(pic, cv2.COLOR_RGB2BGR)):
            raise ValueError(f"cannot write {args.viz} (use a .png or .jpg name)")
        logger.info("wrote %s", args.viz)
    return 0
