"""Issue 12, class 4: every size a user, a file or a message controls has a ceiling with a
clear error, checked before the memory is taken; long bags stream. The CLI cases run in a
subprocess capped at 3 GiB of address space (RLIMIT_AS): a regression that allocates what
the input asks for fails with MemoryError ("out of memory") instead of swapping, and the
tests then fail because they expect the ceiling's message."""
from __future__ import annotations

import io
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hostile import GIB, assert_refused, png_header_only, run_cli_limited
from mast3r_ros.errors import InputError, LimitError
from mast3r_ros.limits import MAX_NPZ_MEMBER_BYTES, load_npz, npz_member_shapes


def _npy_bytes_with_header(shape, dtype=np.float32, payload: bytes = b"") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                               "fortran_order": False, "shape": tuple(shape)})
    return buf.getvalue() + payload


def _lying_npz(path: Path, shape) -> Path:
    """An .npz whose view1_desc header claims ``shape`` but holds 1 KiB."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("view1_desc.npy", _npy_bytes_with_header(shape, payload=b"\0" * 1024))
        zf.writestr("view2_desc.npy", _npy_bytes_with_header((4, 4, 24), payload=b"\0" * (4 * 4 * 24 * 4)))
    return path


def _forged_size_npz(path: Path, size: int) -> Path:
    """An honest small .npz whose zip directory then claims view1_desc decompresses to ``size``."""
    np.savez(path, view1_desc=np.ones((4, 4, 24), np.float32), view2_desc=np.ones((4, 4, 24), np.float32))
    raw = bytearray(path.read_bytes())
    cd = raw.find(b"PK\x01\x02")
    assert raw[cd + 46:cd + 46 + 14] == b"view1_desc.npy"
    raw[cd + 24:cd + 28] = struct.pack("<I", size)  # uncompressed size in the central directory
    path.write_bytes(bytes(raw))
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("limits")
    png_header_only(d / "huge.png", 100_000, 100_000)
    png_header_only(d / "wide.png", 1_000_000, 200)
    Image.new("RGB", (4096, 4096)).save(d / "big4096.png")
    Image.new("RGB", (64, 48)).save(d / "small.png")
    _lying_npz(d / "lying.npz", (100_000, 100_000, 24))
    _lying_npz(d / "lying_neg.npz", (2**40, 2**40, 24))
    _forged_size_npz(d / "forged.npz", 0xFFFFFFF0)
    np.savez(d / "tall.npz", view1_desc=np.zeros((1, 5_000_000, 1), np.float32),
             view2_desc=np.ones((4, 4, 1), np.float32))
    np.savez(d / "deep.npz", view1_desc=np.ones((4, 4, 5000), np.float32),
             view2_desc=np.ones((4, 4, 5000), np.float32))
    np.savez(d / "objects.npz", view1_desc=np.ones((4, 4, 24), np.float32),
             view2_desc=np.ones((4, 4, 24), np.float32))
    (d / "longline.tum").write_bytes(b"1" * 2_000_000)
    (d / "gt.tum").write_text("".join(f"{i} {i * 0.1} 0 0 0 0 0 1\n" for i in range(10)))
    return d


def test_cli_ceilings_under_an_address_space_limit(inputs, reference_dir):
    d = inputs
    ck = str(reference_dir / "public" / "mast3r_tiny_public.pth")
    small = str(d / "small.png")
    cases = [
        (["infer", "--checkpoint", ck, str(d / "huge.png"), small, "--out", str(d / "o.npz")], "infer", [r"IMG1", r"huge\.png", r"(ceiling|too large to decode)"]),
        (["infer", "--checkpoint", ck, str(d / "wide.png"), small, "--out", str(d / "o.npz")], "infer", [r"IMG1", r"(ceiling|too large)"]),
        (["match", "--checkpoint", ck, small, str(d / "huge.png"), "--out", str(d / "o.npz")], "match", [r"IMG2", r"(ceiling|too large to decode)"]),
        (["infer", "--checkpoint", ck, "--device", "cpu", "--no-resize", str(d / "big4096.png"), str(d / "big4096.png"),
          "--out", str(d / "o.npz")], "infer", [r"4096x4096.*65536 tokens.*too large"]),
        (["infer", "--checkpoint", ck, small, small, "--size", "1000000", "--out", str(d / "o.npz")], "infer", [r"--size.*1000000"]),
        (["match", "--desc", str(d / "lying.npz"), "--out", str(d / "o.npz")], "match", [r"declares shape \(100000, 100000, 24\).*corrupt"]),
        (["match", "--desc", str(d / "lying_neg.npz"), "--out", str(d / "o.npz")], "match", [r"declares shape.*corrupt"]),
        (["match", "--desc", str(d / "forged.npz"), "--out", str(d / "o.npz")], "match", [r"view1_desc.*decompresses to 4\.00 GiB.*ceiling"]),
        (["match", "--desc", str(d / "tall.npz"), "--out", str(d / "o.npz")], "match", [r"--desc", r"\(1, 5000000, 1\).*H\*W <= 4,194,304"]),
        (["match", "--desc", str(d / "deep.npz"), "--out", str(d / "o.npz")], "match", [r"--desc", r"D <= 1024"]),
        (["synth", "--frames", str(10**9), "--width", "16", "--height", "16", "--out", str(d / "s1")], "synth", [r"frames.*ceiling"]),
        (["synth", "--frames", "2", "--width", "100000", "--height", "100000", "--out", str(d / "s2")], "synth", [r"100000x100000.*4096"]),
        (["synth", "--frames", "5000", "--out", str(d / "s3")], "synth", [r"5000 frames of 512x384 need 6\.4 GiB.*ceiling"]),
        (["bench", "--height", "8192", "--width", "8192"], "bench", [r"8192x8192.*too large"]),
        (["bench", "--height", "32", "--width", "32", "--batch", "1000000"], "bench", [r"--batch <= 64"]),
        (["bench-match", "--height", "100000", "--width", "100000"], "bench-match", [r"at most 4,194,304 pixels"]),
        (["bench-match", "--repeat", str(10**9)], "bench-match", [r"--repeat", r"1\.\.1000"]),
        (["eval", "--gt", str(d / "longline.tum"), "--est", str(d / "gt.tum")], "eval", [r"longline\.tum:1: line longer than 4096"]),
    ]
    results = run_cli_limited([c[0] for c in cases], limit=3 * GIB)
    for r, (_, cmd, pats) in zip(results, cases):
        assert_refused(r, cmd, *pats)
    assert not (d / "o.npz").exists() and not any((d / s).exists() for s in ("s1", "s2", "s3"))
    assert len(cases) == 18


def test_npz_member_ceiling_on_a_real_compressed_bomb(tmp_path):
    """20 MB of zeros compresses to ~20 KB; with a 1 MiB ceiling it is refused from the zip
    header, before decompression; honest files within the ceiling load."""
    p = tmp_path / "bomb.npz"
    np.savez_compressed(p, view1_desc=np.zeros((5_000_000,), np.float32))
    assert p.stat().st_size < 100_000
    with pytest.raises(LimitError, match=r"bomb\.npz: array 'view1_desc' decompresses to 19\.1 MiB; the ceiling is 1\.0 MiB"):
        npz_member_shapes(p, max_member_bytes=1 << 20)
    assert load_npz(p)["view1_desc"].shape == (5_000_000,)
    assert MAX_NPZ_MEMBER_BYTES == 1 << 30
    np.savez(tmp_path / "obj.npz", a=np.array([{"x": 1}], dtype=object))
    with pytest.raises(InputError, match=r"dtype object"):
        load_npz(tmp_path / "obj.npz")


def test_engine_and_preprocessing_ceilings():
    import torch

    from mast3r_ros.model.engine import Mast3rEngine
    from mast3r_ros.model.network import Mast3rConfig, Mast3rNet
    from mast3r_ros.model.preprocess import compute_transform, preprocess_image

    with pytest.raises(LimitError, match=r"size .*4096 exceeds the ceiling of 2048"):
        compute_transform(480, 640, size=4096)
    with pytest.raises(LimitError, match=r"image is 20000x20000 \(WxH\) = 400,000,000 pixels; the ceiling"):
        compute_transform(20_000, 20_000, size=512)
    with pytest.raises(LimitError, match=r"image fed without resizing of 2064x2048"):
        preprocess_image(np.zeros((2064, 2048, 3), np.uint8), resize=False)
    with torch.device("meta"):
        net = Mast3rNet(Mast3rConfig.tiny())
    with pytest.raises(ValueError, match=r"size .* \[16, 2048\], got 100000"):
        Mast3rEngine(net, device="cpu", size=100_000)
    with pytest.raises(ValueError, match=r"size .* got 512\.5"):
        Mast3rEngine(net, device="cpu", size=512.5)


def test_read_bag_ceiling_and_streaming(tmp_path):
    """``read_bag`` refuses to hold more than ``max_bytes``; ``iter_bag`` streams the same
    frames (images, K, depth, poses) one at a time."""
    from mast3r_ros.synth.bag import iter_bag, read_bag, write_bag
    from mast3r_ros.synth.sequence import SynthConfig, generate

    seq = generate(SynthConfig(frames=5, width=64, height=48, trajectory="rotation"))
    bag = write_bag(seq, tmp_path / "bag")
    per_frame = 64 * 48 * 3 + 64 * 48 * 4
    with pytest.raises(LimitError, match=r"exceed .* after 2 frames; read it with iter_bag"):
        read_bag(bag, max_bytes=int(2.5 * per_frame))
    full = read_bag(bag)
    streamed = list(iter_bag(bag, max_pending=2))
    assert len(full) == len(streamed) == 5
    for a, b, s in zip(full.frames, streamed, seq.frames):
        assert a.stamp_ns == b.stamp_ns == s.stamp_ns
        np.testing.assert_array_equal(a.rgb, b.rgb)
        np.testing.assert_array_equal(b.rgb, s.rgb)
        np.testing.assert_array_equal(b.depth, s.depth)
        np.testing.assert_allclose(b.T_world_cam, s.T_world_cam, atol=1e-9)
        np.testing.assert_allclose(b.K, s.K)
    assert full.info["frames"] == 5


def test_read_tum_pose_ceiling(tmp_path):
    from mast3r_ros.evaluation.trajectory import read_tum

    p = tmp_path / "many.tum"
    p.write_text("".join(f"{i} 0 0 0 0 0 0 1\n" for i in range(50)))
    with pytest.raises(LimitError, match=r"more than 20 poses"):
        read_tum(p, max_poses=20)
    assert len(read_tum(p)) == 50
