"""Issue 12, class 3: weights that would load wrong are refused, never used silently.
Compressed / truncated / corrupted .pth zip records, non-finite, meta, sparse or integer
tensors, and network outputs that are not finite (CLI: error; library: loud warning)."""
from __future__ import annotations

import argparse
import logging
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from hostile import assert_refused, run_main
from mast3r_ros.errors import CheckpointError, NonFiniteError
from mast3r_ros.model.checkpoint import check_zip_records, load_model, read_checkpoint


@pytest.fixture(scope="module")
def public_pth(reference_dir: Path) -> Path:
    return reference_dir / "public" / "mast3r_tiny_public.pth"


@pytest.fixture(scope="module")
def container(public_pth):
    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(public_pth, weights_only=True)


def _save(path: Path, container, **changes) -> Path:
    sd = dict(container["model"])
    sd.update(changes)
    torch.save({**container, "model": sd}, path)
    return path


def _equal_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_compressed_records_load_the_right_weights(public_pth, tmp_path):
    """torch's memory-mapped loader reads a deflated record's compressed bytes as weights
    (garbage, no error); we detect non-stored records and load those without mmap."""
    defl = tmp_path / "deflated.pth"
    with zipfile.ZipFile(public_pth) as zin, zipfile.ZipFile(defl, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info.filename), compress_type=zipfile.ZIP_DEFLATED)
    assert check_zip_records(public_pth) is True and check_zip_records(defl) is False
    assert _equal_weights(load_model(public_pth), load_model(defl))


def _record_span(path: Path, name_suffix: str) -> tuple[int, int]:
    """(offset, length) of a stored record's data in the file."""
    with zipfile.ZipFile(path) as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith(name_suffix))
        raw = path.read_bytes()
        n, m = int.from_bytes(raw[info.header_offset + 26:info.header_offset + 28], "little"), \
            int.from_bytes(raw[info.header_offset + 28:info.header_offset + 30], "little")
        return info.header_offset + 30 + n + m, info.compress_size


@pytest.mark.parametrize("where", [0.0, 0.5, 0.999])
def test_corrupted_record_fails_crc(public_pth, tmp_path, where):
    """One flipped byte inside a tensor record (which mmap would load as a wrong weight)."""
    off, size = _record_span(public_pth, "/data/3")
    raw = bytearray(public_pth.read_bytes())
    raw[off + int(where * (size - 1))] ^= 0x5A
    bad = tmp_path / "flip.pth"
    bad.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=r"flip\.pth: record '.*data/3' fails its CRC-32"):
        read_checkpoint(bad)


@pytest.mark.parametrize("keep", [0.05, 0.5, 0.9, 0.9999])
def test_truncated_archives_refused(public_pth, tmp_path, keep):
    raw = public_pth.read_bytes()
    bad = tmp_path / "cut.pth"
    bad.write_bytes(raw[: int(len(raw) * keep)])
    with pytest.raises(CheckpointError, match=r"cut\.pth: not a readable torch checkpoint"):
        read_checkpoint(bad)


def test_record_sizes_beyond_the_file_refused(public_pth, tmp_path):
    """A central directory that claims a record larger than the file holds."""
    raw = bytearray(public_pth.read_bytes())
    with zipfile.ZipFile(public_pth) as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith("/data/3"))
    # patch the record's compressed and uncompressed sizes in its central-directory entry
    name = info.filename.encode()
    cd = raw.rfind(b"PK\x01\x02" + raw[raw.find(b"PK\x01\x02") + 4:raw.find(b"PK\x01\x02") + 4][:0], 0)
    cd = raw.find(name, raw.find(b"PK\x01\x02")) - 46
    assert raw[cd:cd + 4] == b"PK\x01\x02"
    raw[cd + 20:cd + 24] = (len(raw) * 2).to_bytes(4, "little")
    raw[cd + 24:cd + 28] = (len(raw) * 2).to_bytes(4, "little")
    bad = tmp_path / "sizes.pth"
    bad.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=r"sizes\.pth"):
        read_checkpoint(bad)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights_refused_naming_the_tensor(container, tmp_path, value):
    key = "enc_blocks.1.mlp.fc2.weight"
    w = container["model"][key].clone()
    w[3, 5] = value
    with pytest.raises(NonFiniteError, match=rf"nonfinite\.pth: tensor '{key}' \(48, 192\) has 1 non-finite"):
        read_checkpoint(_save(tmp_path / "nonfinite.pth", container, **{key: w}))
    sd = {k: v.contiguous() for k, v in container["model"].items() if ".layer_rn." not in k}
    sd[key] = w
    save_file(sd, str(tmp_path / "nonfinite.safetensors"))
    with pytest.raises(NonFiniteError, match=rf"tensor '{key}'"):
        read_checkpoint(tmp_path / "nonfinite.safetensors")


@pytest.mark.parametrize("make,match", [
    (lambda w: torch.empty(w.shape, device="meta"), r"has no data \(device meta\)"),
    (lambda w: w.to_sparse(), r"sparse_coo.*ordinary dense"),
    (lambda w: w.to(torch.int32), r"dtype torch\.int32.*floating point"),
    (lambda w: w.to(torch.bool), r"dtype torch\.bool"),
], ids=["meta", "sparse", "int32", "bool"])
def test_tensors_of_the_wrong_kind_refused(container, tmp_path, make, match):
    key = "decoder_embed.weight"
    with pytest.raises(CheckpointError, match=rf"'{key}'.*{match}|{match}"):
        read_checkpoint(_save(tmp_path / "kind.pth", container, **{key: make(container["model"][key])}))


def test_non_finite_outputs_are_an_error_in_the_cli_and_a_warning_in_the_library(
        container, tmp_path, capsys, one_torch_thread):
    """Finite weights whose outputs overflow (exp of a huge confidence logit): `infer` and
    `match` exit 2 without writing; the engine logs a loud warning."""
    from mast3r_ros.model.engine import Mast3rEngine

    b = container["model"]["downstream_head1.dpt.head.4.bias"].clone()
    b[3] = 1e4  # conf = 1 + exp(1e4) = inf
    bad = _save(tmp_path / "overflow.pth", container, **{"downstream_head1.dpt.head.4.bias": b})
    rng = np.random.default_rng(1)
    for name in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(tmp_path / name)
    common = ["--checkpoint", str(bad), "--device", "cpu", "--size", "64",
              str(tmp_path / "a.png"), str(tmp_path / "b.png")]
    r = run_main(["infer", *common, "--out", str(tmp_path / "o.npz")], capsys)
    assert_refused(r, "infer", r"non-finite values.*view1_conf")
    assert not (tmp_path / "o.npz").exists()
    r = run_main(["match", *common, "--out", str(tmp_path / "m.npz")], capsys)
    assert_refused(r, "match", r"non-finite")
    assert not (tmp_path / "m.npz").exists()
    engine = Mast3rEngine.from_checkpoint(bad, device="cpu", size=64)
    img = np.asarray(Image.open(tmp_path / "a.png"))
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # type: ignore[method-assign]
    log = logging.getLogger("mast3r_ros.model.engine")
    log.addHandler(handler)
    try:
        pred = engine.predict(img, img)
    finally:
        log.removeHandler(handler)
    assert not torch.isfinite(pred.view1.conf).all()
    assert any("NOT FINITE" in r.getMessage() and "view1.conf" in r.getMessage() for r in records)
