"""Dense matching of MASt3R descriptor maps (ROS-free): fast reciprocal matching, the
mutual-NN baseline, filters and coarse-to-fine matching for high-resolution images."""
from mast3r_ros.matching.coarse_to_fine import (
    CoarseToFineConfig,
    CoarseToFineResult,
    coarse_to_fine_match,
    select_window_pairs,
    window_grid,
)
from mast3r_ros.matching.frm import (
    FRMConfig,
    Matches,
    NNBackend,
    RawMatches,
    border_mask,
    fast_reciprocal_nn,
    grid_seeds,
    match_descriptors,
    match_prediction,
    mutual_nn,
    nearest_neighbors,
)

__all__ = [
    "CoarseToFineConfig", "CoarseToFineResult", "coarse_to_fine_match", "select_window_pairs",
    "window_grid",
    "FRMConfig", "Matches", "NNBackend", "RawMatches", "border_mask", "fast_reciprocal_nn",
    "grid_seeds", "match_descriptors", "match_prediction", "mutual_nn", "nearest_neighbors",
]
