"""ROS-free tracking core: local matcher, robust frame-to-keyframe pose, keyframes with
pointmap fusion, loss and relocalization, and ``SlamSystem`` (tracker + relocalization +
optional mapper on one engine).

- ``types``: ``TrackingState``, ``Keyframe``, ``FrameResult``.
- ``local_match``: pointmap-guided window matching (``local_match``).
- ``pose``: ``PoseMode`` (SE(3) PnP / Sim(3) IRLS) and the solvers.
- ``tracker``: ``TrackerConfig``, ``Tracker``.
- ``system``: ``SlamConfig``, ``SlamSystem``.
- ``cloud``: point clouds of keyframes (voxel subsampling, PLY).

Mapping by incremental sparse global alignment, loop closure and point clouds:

- ``alignment``: ``AlignmentConfig``, ``AlignmentProblem``, ``align_views``, scene graphs.
- ``mapper``: ``Mapper``, ``MapperConfig``, ``MapUpdate``, ``KeyframeData``.
- ``loop_closure``: ``LoopDetector``, ``LoopClosureConfig``, ``LoopCandidate``.
- ``point_cloud``: ``build_point_cloud``, ``voxel_downsample``.
- ``batch``: ``align_images`` (``mast3r-ros align``).
"""
from mast3r_ros.slam.local_match import LocalMatchConfig, LocalMatches, local_match
from mast3r_ros.slam.pose import PoseMode
from mast3r_ros.slam.system import SlamConfig, SlamSystem
from mast3r_ros.slam.tracker import Tracker, TrackerConfig
from mast3r_ros.slam.types import FrameResult, Keyframe, TrackingState

__all__ = [
    "LocalMatchConfig", "LocalMatches", "local_match", "PoseMode", "SlamConfig", "SlamSystem",
    "Tracker", "TrackerConfig", "FrameResult", "Keyframe", "TrackingState",
]
