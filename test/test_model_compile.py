"""torch.compile path of the engine (issue 13): the encoder, decoder and heads each trace as
ONE graph (``fullgraph=True``: no graph breaks, so inductor / CUDA graphs see whole stages)
and the compiled engine returns what eager returns. The ``eager`` backend traces without
code generation, which keeps this test within seconds-to-a-minute on the 2-core CPU; the
inductor backend is the same trace plus code generation (``mast3r-ros bench --compile``)."""
from __future__ import annotations

import pytest
import torch

from mast3r_ros.cli.bench import random_model
from mast3r_ros.model.engine import Mast3rEngine
from mast3r_ros.model.network import Mast3rConfig


@pytest.mark.slow
def test_compiled_engine_traces_whole_stages_and_equals_eager(one_torch_thread):
    model = random_model(Mast3rConfig.tiny(), torch.device("cpu"), seed=5)
    eager = Mast3rEngine(model, device="cpu", resize=False)
    compiled = Mast3rEngine(model, device="cpu", resize=False, compile="eager")
    assert compiled.compiled and not eager.compiled
    gen = torch.Generator().manual_seed(2)
    imgs = [torch.rand(1, 3, 48, 64, generator=gen) * 2 - 1 for _ in range(2)]
    a = eager.decode(*eager.encode_tensors(imgs, [None, None], [None, None]))
    b = compiled.decode(*compiled.encode_tensors(imgs, [None, None], [None, None]))
    for va, vb in ((a.view1, b.view1), (a.view2, b.view2)):
        for name in ("pts3d", "conf", "desc", "desc_conf"):
            torch.testing.assert_close(getattr(vb, name), getattr(va, name), atol=1e-6, rtol=1e-6)
