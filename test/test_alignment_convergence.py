"""Sparse alignment's convergence test (``AlignmentConfig.converge_rel_tol``) against running
every iteration, on the same decoded pairs (6 views of the synthetic walk, 128x96, simulator
moderate profile, unknown focals, a full pass from the chain's initialisation).

Stopping early must change the result little (camera positions within 1 % of the views'
spread, rotations within 0.2 deg, focals within 0.5 %) while running fewer iterations; with
the test off, every configured iteration runs. The speed itself is benchmarked, not tested
(benchmarks/bench_mapping.py).
"""
from __future__ import annotations

import copy

import numpy as np
import pytest

from mast3r_ros.slam.alignment import AlignmentConfig, AlignmentProblem
from mast3r_ros.synth.sequence import SynthConfig, generate
from mast3r_ros.synth.simulator import NetworkOutputSimulator, SimulatorConfig



@pytest.mark.slow
def test_converged_stop_matches_every_iteration(one_torch_thread):
    seq = generate(SynthConfig(trajectory="walk", frames=6, width=128, height=96, seed=5))
    eng = NetworkOutputSimulator(seq, SimulatorConfig.moderate(size=128))
    views = [eng.encode(f.rgb, frame_id=f.frame_id) for f in seq.frames]
    base = AlignmentProblem(AlignmentConfig(match_subsample=4), "cpu")
    for i, v in enumerate(views):
        base.add_view(i, v.transform, None)
    for i in range(6):
        for j in range(i + 1, min(i + 3, 6)):
            for a, b in ((i, j), (j, i)):
                base.add_pair(eng.decode(views[a], views[b]), a, b)
    out = {}
    for tol in (0.0, 2e-3):
        prob = copy.deepcopy(base)
        prob.config = AlignmentConfig(match_subsample=4, stage1_iters=200, stage2_iters=150,
                                      converge_rel_tol=tol)
        res = prob.optimize(None, reinit=True)
        out[tol] = res
    full, fast = out[0.0], out[2e-3]
    assert full.iterations == {"stage1": 200, "stage2": 150}
    n_fast = fast.iterations["stage1"] + fast.iterations["stage2"]
    spread = float(np.linalg.norm(full.T_world_cam[:, :3, 3] - full.T_world_cam[:, :3, 3].mean(0),
                                  axis=1).max())
    dpos = float(np.linalg.norm(full.T_world_cam[:, :3, 3] - fast.T_world_cam[:, :3, 3], axis=1).max())
    drot = max(float(np.degrees(np.arccos(np.clip((np.trace(a[:3, :3].T @ b[:3, :3]) - 1) / 2, -1, 1))))
               for a, b in zip(full.T_world_cam, fast.T_world_cam))
    dfoc = float(np.max(np.abs(fast.K_net[:, 0, 0] / full.K_net[:, 0, 0] - 1)))
    print(f"\nconverged after {fast.iterations} of 200+150 iterations: positions differ by "
          f"{1e3 * dpos:.2f} mm (spread {spread:.2f} m), rotations {drot:.3f} deg, focals "
          f"{100 * dfoc:.3f} %")
    assert n_fast < 350
    assert dpos <= 0.01 * spread
    assert drot <= 0.2
    assert dfoc <= 0.005
