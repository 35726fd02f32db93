"""Tracking + relocalization (+ mapping) in one process: ``ros2 launch mast3r_ros slam.launch.py``.

Starts ``slam_node`` (node name ``slam``) in ``namespace`` with the parameters of
``params_file``; the launch arguments below override the file where given (empty = keep
the file's value). With ``separate_mapping:=true`` it starts two processes instead, each
with its own engine, in the same namespace: ``tracker_node`` (node ``tracker``, parameters
of ``params_file``, ``publish_map_odom`` false) and ``mapping_node`` (node ``mapping``,
``params_file`` then ``mapping_params_file``), which maps the tracker's keyframes.
Who owns TF ``map -> odom``: ``slam_node`` by default; ``mapping_node`` with
``separate_mapping:=true`` (the tracker then publishes only ``odom -> robot``; its ``reset``
and ``get_keyframes`` move to ``tracking/reset`` and ``tracking/get_keyframes``, so
``reset`` and ``get_keyframes`` are the mapping node's). ``image`` and ``camera_info`` are
remapped to ``image_topic`` and ``camera_info_topic``. ``bag:=FOLDER`` also plays that rosbag2 folder's camera topics with
``bag_player`` once the node has subscribed (publishing ``/clock`` where rosgraph_msgs is
installed; ``use_sim_time:=true`` makes the node follow it), and ``rviz:=true``
opens rviz2 with ``rviz/mast3r_ros.rviz`` where rviz2 is installed (else it says so).

Example (the simulator stands in for the network: tests and evaluation only)::

    mast3r-ros synth --frames 120 --width 256 --height 192 --out /tmp/ds
    ros2 launch mast3r_ros slam.launch.py engine:=simulator simulator_bag:=/tmp/ds/bag \\
        bag:=/tmp/ds/bag use_sim_time:=true
"""
import shutil

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, GroupAction, LogInfo, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node, PushRosNamespace, SetParameter
from launch_ros.substitutions import FindPackageShare

PKG = "mast3r_ros"

# (name, default, description); '' = keep what params_file says
ARGS = [
    ("namespace", "mast3r", "namespace of the node, its services and topics"),
    ("params_file", PathJoinSubstitution([FindPackageShare(PKG), "config", "slam.yaml"]),
     "YAML with the node's parameters (every one commented in the default file)"),
    ("image_topic", "/camera/image_raw", "sensor_msgs/Image input (remaps 'image')"),
    ("camera_info_topic", "/camera/camera_info", "sensor_msgs/CameraInfo input (remaps 'camera_info')"),
    ("engine", "", "'network' or 'simulator' (tests/evaluation only); '' = from params_file"),
    ("checkpoint", "", "MASt3R checkpoint (.pth / .safetensors) for engine network; '' = from params_file"),
    ("device", "", "'cuda', 'cpu'; '' = from params_file (whose '' means CUDA when available)"),
    ("simulator_bag", "", "rosbag2 folder the simulator answers from; '' = from params_file"),
    ("simulator_profile", "", "simulator noise: exact, moderate, realistic, hard; '' = from params_file"),
    ("image_size", "", "long side of the network input; '' = from params_file"),
    ("map_path", "", "map folder to load at start; '' = from params_file"),
    ("use_camera_info", "", "'false' = estimate intrinsics from the pointmaps; '' = from params_file"),
    ("separate_mapping", "false", "'true' = tracker_node + mapping_node (two processes, two "
     "engines) instead of slam_node"),
    ("mapping_params_file", PathJoinSubstitution([FindPackageShare(PKG), "config", "mapping.yaml"]),
     "YAML with mapping_node's own parameters (separate_mapping:=true; after params_file)"),
    ("bag", "", "play this rosbag2 folder with bag_player ('' = none)"),
    ("bag_rate", "1.0", "bag_player --rate"),
    ("bag_wait", "300", "bag_player --wait-for-subscribers: seconds at most to wait for the node "
     "to subscribe (it loads its engine first) before playing"),
    ("rviz", "false", "start rviz2 with rviz/mast3r_ros.rviz (where rviz2 is installed)"),
    ("use_sim_time", "false", "follow /clock (e.g. from bag_player)"),
]
OVERRIDES = ("engine", "checkpoint", "device", "simulator_bag", "simulator_profile", "map_path")
TYPED_OVERRIDES = {"image_size": int, "use_camera_info": lambda v: v.lower() in ("true", "1", "yes")}


def _true(context, name: str) -> bool:
    return LaunchConfiguration(name).perform(context).lower() in ("true", "1", "yes")


def _node(context):
    overrides = {}
    for name in OVERRIDES:
        value = LaunchConfiguration(name).perform(context)
        if value:
            overrides[name] = value
    for name, cast in TYPED_OVERRIDES.items():
        value = LaunchConfiguration(name).perform(context)
        if value:
            overrides[name] = cast(value)
    image = ("image", LaunchConfiguration("image_topic").perform(context))
    info = ("camera_info", LaunchConfiguration("camera_info_topic").perform(context))
    params_file = LaunchConfiguration("params_file")
    if not _true(context, "separate_mapping"):
        return [Node(package=PKG, executable="slam_node", name="slam", output="screen",
                     emulate_tty=True, parameters=[params_file, overrides],
                     remappings=[image, info])]
    # the mapping node owns map -> odom (the tracker must not publish it too) and the map's
    # services: 'reset' (it resets the tracker at tracking/reset first), 'get_keyframes'
    # (corrected), 'save_map', 'load_map'; the tracker's own are moved under tracking/
    mapping = {k: v for k, v in overrides.items() if k != "use_camera_info"}
    return [Node(package=PKG, executable="tracker_node", name="tracker", output="screen",
                 emulate_tty=True, parameters=[params_file, {**overrides, "publish_map_odom": False}],
                 remappings=[image, info, ("reset", "tracking/reset"),
                             ("get_keyframes", "tracking/get_keyframes")]),
            Node(package=PKG, executable="mapping_node", name="mapping", output="screen",
                 emulate_tty=True,
                 parameters=[params_file, LaunchConfiguration("mapping_params_file"), mapping],
                 remappings=[image])]


def _bag(context):
    bag = LaunchConfiguration("bag").perform(context)
    if not bag:
        return []
    # only the camera topics: played once the node subscribes to them (it loads its engine
    # first), so no frame is lost to start-up; the bag's ground truth stays out of /tf
    topics = [LaunchConfiguration("image_topic").perform(context),
              LaunchConfiguration("camera_info_topic").perform(context)]
    # separate mapping: the tracker AND the mapping node must hear the first image
    minimum = (["--min-subscribers", f"{topics[0]}=2"] if _true(context, "separate_mapping")
               else [])
    return [Node(package=PKG, executable="bag_player", name="bag_player", output="screen",
                 arguments=[bag, "--rate", LaunchConfiguration("bag_rate").perform(context),
                            "--topics", *topics, "--wait-for-subscribers",
                            LaunchConfiguration("bag_wait").perform(context), *minimum])]


def _rviz(context):
    if LaunchConfiguration("rviz").perform(context).lower() not in ("true", "1", "yes"):
        return []
    if shutil.which("rviz2") is None:
        return [LogInfo(msg="rviz:=true but rviz2 is not installed here: skipping it "
                            "(open rviz/mast3r_ros.rviz on a machine that has rviz2)")]
    return [Node(package="rviz2", executable="rviz2", name="rviz", output="screen",
                 arguments=["-d", PathJoinSubstitution([FindPackageShare(PKG), "rviz",
                                                        "mast3r_ros.rviz"]).perform(context)])]


def generate_launch_description():
    args = [DeclareLaunchArgument(n, default_value=d, description=desc) for n, d, desc in ARGS]
    group = GroupAction([
        PushRosNamespace(LaunchConfiguration("namespace")),
        SetParameter("use_sim_time", LaunchConfiguration("use_sim_time")),
        OpaqueFunction(function=_node),
        OpaqueFunction(function=_bag),
        OpaqueFunction(function=_rviz),
    ])
    return LaunchDescription([*args, group])
