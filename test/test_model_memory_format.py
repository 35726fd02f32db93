"""The heads run channels-last by design (issue 13): every convolution of both heads gets an
NHWC input, the raw head maps come out NHWC, and the result equals an NCHW execution of the
same weights (float32, tolerance 1e-5 absolute + 1e-5 relative)."""
from __future__ import annotations

import pytest
import torch

from mast3r_ros.cli.bench import random_model
from mast3r_ros.model.network import Mast3rConfig, tokens_to_map

CONV_TYPES = (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Upsample)


def _head_modules(model):
    return [(n, m) for n, m in model.named_modules()
            if n.startswith("downstream_head") and isinstance(m, CONV_TYPES)]


@pytest.fixture(scope="module")
def model(one_torch_thread):
    return random_model(Mast3rConfig.tiny(), torch.device("cpu"), seed=3)


def test_tokens_to_map_is_a_channels_last_view():
    tokens = torch.randn(1, 5 * 7, 16)
    x = tokens_to_map(tokens, 5, 7)
    assert x.shape == (1, 16, 5, 7)
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert x.data_ptr() == tokens.data_ptr()  # no copy
    assert torch.equal(x[0, :, 2, 3], tokens[0, 2 * 7 + 3])


@pytest.mark.parametrize("hw", [(64, 96), (80, 112)])  # even and odd token grids (crop path)
def test_every_head_convolution_sees_nhwc(model, hw):
    seen, not_nhwc = [], []

    def pre(mod, inp, name):
        seen.append(name)
        if not inp[0].is_contiguous(memory_format=torch.channels_last):
            not_nhwc.append(name)

    handles = [m.register_forward_pre_hook(lambda mod, inp, n=n: pre(mod, inp, n))
               for n, m in _head_modules(model)]
    try:
        gen = torch.Generator().manual_seed(0)
        img = torch.rand(2, 3, *hw, generator=gen) * 2 - 1
        with torch.no_grad():
            out = model(img[:1], img[1:])
    finally:
        for h in handles:
            h.remove()
    assert len(seen) >= 2 * 20, "hooks did not see the head convolutions"
    assert not_nhwc == []
    for raw in (out.raw1, out.raw2):
        assert raw.is_contiguous(memory_format=torch.channels_last)
        # postprocess's (B, H, W, 29) view of an NHWC map is already contiguous
        assert raw.permute(0, 2, 3, 1).is_contiguous()


def test_channels_last_equals_nchw_execution(model):
    """Same weights, heads forced to NCHW by pre-hooks: outputs agree."""
    gen = torch.Generator().manual_seed(1)
    img1 = torch.rand(1, 3, 64, 96, generator=gen) * 2 - 1
    img2 = torch.rand(1, 3, 64, 96, generator=gen) * 2 - 1
    with torch.no_grad():
        nhwc = model(img1, img2)
    handles = [m.register_forward_pre_hook(lambda mod, inp: (inp[0].contiguous(),) + tuple(inp[1:]))
               for _, m in _head_modules(model)]
    try:
        with torch.no_grad():
            nchw = model(img1, img2)
    finally:
        for h in handles:
            h.remove()
    for a, b in ((nhwc.raw1, nchw.raw1), (nhwc.raw2, nchw.raw2)):
        torch.testing.assert_close(a.contiguous(), b.contiguous(), atol=1e-5, rtol=1e-5)
