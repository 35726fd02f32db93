"""ROS-free geometry: intrinsics from pointmaps, PnP, essential matrix with metric scale,
Umeyama alignment, pose covariance and transform conversions (quaternions are xyzw)."""
from mast3r_ros.geometry.align import Sim3, umeyama
from mast3r_ros.geometry.covariance import pose_covariance, reprojection_residuals
from mast3r_ros.geometry.intrinsics import FocalEstimate, check_K, estimate_focal, intrinsics_matrix
from mast3r_ros.geometry.pose import (
    PnPConfig, PnPResult, PnPSolver, RelativePoseConfig, RelativePoseResult,
    relative_pose_essential, solve_pnp,
)
from mast3r_ros.geometry.transforms import (
    T_to_pose, check_T, invert_T, make_T, matrix_to_quaternion_xyzw, pose_to_T,
    quaternion_wxyz_to_xyzw, quaternion_xyzw_to_matrix, quaternion_xyzw_to_wxyz,
    rotation_angle_deg, transform_points,
)

__all__ = [
    "Sim3", "umeyama", "pose_covariance", "reprojection_residuals", "FocalEstimate", "check_K",
    "estimate_focal", "intrinsics_matrix", "PnPConfig", "PnPResult", "PnPSolver",
    "RelativePoseConfig", "RelativePoseResult", "relative_pose_essential", "solve_pnp",
    "T_to_pose", "check_T", "invert_T", "make_T", "matrix_to_quaternion_xyzw", "pose_to_T",
    "quaternion_wxyz_to_xyzw", "quaternion_xyzw_to_matrix", "quaternion_xyzw_to_wxyz",
    "rotation_angle_deg", "transform_points",
]
