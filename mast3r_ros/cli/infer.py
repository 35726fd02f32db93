"""``mast3r-ros infer``: run the network on two images and save the predictions (.npz)."""
from __future__ import annotations

import argparse
import logging

import numpy as np

from mast3r_ros.cli._common import check_output_path, engine_from_args, load_rgb, progress, save_npz

logger = logging.getLogger(__name__)

OUTPUT_KEYS = ("view1_pts3d", "view1_conf", "view1_desc", "view1_desc_conf",
               "view2_pts3d_in_other_view", "view2_conf", "view2_desc", "view2_desc_conf")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("infer", help="run MASt3R on an image pair and write an .npz",
                       description="Run MASt3R on (IMG1, IMG2) and write float32 arrays at network "
                                   "resolution without batch dimension: " + ", ".join(OUTPUT_KEYS))
    p.add_argument("--checkpoint", required=True, help="MASt3R .pth or .safetensors checkpoint")
    p.add_argument("img1", help="first image (its camera frame is the output frame)")
    p.add_argument("img2", help="second image")
    p.add_argument("--out", required=True, help="output file (NumPy .npz archive, written under exactly this name)")
    p.add_argument("--no-resize", action="store_true",
                   help="feed images as they are (both sides must be multiples of 16)")
    p.add_argument("--size", type=int, default=512, help="long side after resizing")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--dtype", default="float32", help="trunk dtype: float32, bfloat16, float16")
    p.set_defaults(func=run)


def prediction_arrays(pred) -> dict[str, np.ndarray]:
    """``PairPrediction`` -> the infer .npz arrays (float32, no batch dimension)."""
    f = lambda t: t.detach().float().cpu().numpy()  # noqa: E731
    v1, v2 = pred.view1, pred.view2
    return {"view1_pts3d": f(v1.pts3d), "view1_conf": f(v1.conf), "view1_desc": f(v1.desc),
            "view1_desc_conf": f(v1.desc_conf), "view2_pts3d_in_other_view": f(v2.pts3d),
            "view2_conf": f(v2.conf), "view2_desc": f(v2.desc), "view2_desc_conf": f(v2.desc_conf)}


def check_finite_arrays(arrays: dict[str, np.ndarray], what: str) -> None:
    """Refuse NaN / inf in network outputs (never write or match garbage without a word)."""
    from mast3r_ros.errors import NonFiniteError

    bad = {k: int((~np.isfinite(v)).sum()) for k, v in arrays.items() if not np.isfinite(v).all()}
    if bad:
        raise NonFiniteError(f"{what} has non-finite values (count per array: {bad}); the checkpoint "
                             "weights or the dtype (--dtype float16 overflows) are likely wrong")


def run(args: argparse.Namespace) -> int:
    out = check_output_path(args.out, "--out")
    images = [load_rgb(args.img1, "IMG1"), load_rgb(args.img2, "IMG2")]
    engine = engine_from_args(args, (args.img1, args.img2), images)
    with progress(total=3, desc="infer", unit="step") as bar:  # 2 encodes (one batch), decode
        v1, v2 = engine.encode_batch(images)
        bar.update(2)
        pred = engine.decode(v1, v2)
        bar.update(1)
    arrays = prediction_arrays(pred)
    check_finite_arrays(arrays, "the network output")
    save_npz(out, **arrays)
    logger.info("wrote %s: view1 %s, view2 %s (network resolution)", out,
                tuple(pred.view1.transform.network_size), tuple(pred.view2.transform.network_size))
    return 0
