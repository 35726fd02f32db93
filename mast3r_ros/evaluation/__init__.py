"""Trajectory evaluation: TUM files, ATE/RPE with SE(3)/Sim(3) alignment, relocalization
success rates, plots. Umeyama comes from ``mast3r_ros.geometry.align``."""
from mast3r_ros.evaluation.metrics import (
    RELOC_THRESHOLDS, Alignment, AlignedPair, ATEResult, ErrorStats, RelocResult, RPEResult,
    align, ate, relocalization_success, rotation_angle_deg, rpe,
)
from mast3r_ros.evaluation.trajectory import Trajectory, associate, read_tum, write_tum

__all__ = [
    "RELOC_THRESHOLDS", "Alignment", "AlignedPair", "ATEResult", "ErrorStats", "RelocResult",
    "RPEResult", "align", "ate", "relocalization_success", "rotation_angle_deg", "rpe",
    "Trajectory", "associate", "read_tum", "write_tum",
]
