"""mast3r_ros: MASt3R relocalization, tracking and sparse mapping for ROS 2.

The library is split along one seam:

- ROS-free core (never imports rclpy): ``mast3r_ros.model`` (network, checkpoints,
  preprocessing, inference engine), ``mast3r_ros.matching`` (fast reciprocal matching,
  coarse-to-fine), ``mast3r_ros.geometry`` (pose solvers, alignment, conversions),
  ``mast3r_ros.synth`` (synthetic worlds, bags, network-output simulator),
  ``mast3r_ros.evaluation`` (ATE/RPE), ``mast3r_ros.cli`` (the ``mast3r-ros`` command).
- ROS layer: ``mast3r_ros.ros`` (message conversions, nodes). Only it imports rclpy.

When built by colcon, the generated interfaces live beside it as ``mast3r_ros.msg`` and
``mast3r_ros.srv``. ``extend_path`` lets a source checkout earlier on ``sys.path`` still
find them in the colcon install tree.
"""
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
__version__ = "0.1.0"
