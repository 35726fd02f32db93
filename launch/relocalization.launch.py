"""Relocalization service only: ``ros2 launch mast3r_ros relocalization.launch.py``.

Starts ``relocalization_node`` (node name ``relocalization``) in ``namespace`` with the
parameters of ``params_file``; the launch arguments below override the file where given
(empty = keep the file's value). ``bag:=FOLDER`` also plays a rosbag2 folder with
``bag_player`` (publishing ``/clock``; set ``use_sim_time:=true`` to follow it), and
``rviz:=true`` opens rviz2 where it is installed.

Example (test/evaluation stand-in, no weights)::

    ros2 launch mast3r_ros relocalization.launch.py engine:=simulator simulator_bag:=/tmp/bag
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, GroupAction, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node, PushRosNamespace, SetParameter
from launch_ros.substitutions import FindPackageShare

PKG = "mast3r_ros"

# (name, default, description); '' = keep what params_file says
ARGS = [
    ("namespace", "mast3r", "namespace of the node, its services and topics"),
    ("params_file", PathJoinSubstitution([FindPackageShare(PKG), "config", "relocalization.yaml"]),
     "YAML with the node's parameters (every one commented in the default file)"),
    ("engine", "", "'network' or 'simulator' (tests/evaluation only); '' = from params_file"),
    ("checkpoint", "", "MASt3R checkpoint (.pth / .safetensors) for engine network; '' = from params_file"),
    ("device", "", "'cuda', 'cpu'; '' = from params_file (whose '' means CUDA when available)"),
    ("simulator_bag", "", "rosbag2 folder the simulator answers from; '' = from params_file"),
    ("simulator_profile", "", "simulator noise: exact, moderate, realistic, hard; '' = from params_file"),
    ("map_path", "", "map folder to load at start; '' = from params_file"),
    ("bag", "", "play this rosbag2 folder with bag_player ('' = none)"),
    ("bag_rate", "1.0", "bag_player --rate"),
    ("rviz", "false", "start rviz2 with rviz/mast3r_ros.rviz (where rviz2 is installed)"),
    ("use_sim_time", "false", "follow /clock (e.g. from bag_player)"),
]
OVERRIDES = ("engine", "checkpoint", "device", "simulator_bag", "simulator_profile", "map_path")


def _node(context):
    overrides = {}
    for name in OVERRIDES:
        value = LaunchConfiguration(name).perform(context)
        if value:
            overrides[name] = value
    return [Node(package=PKG, executable="relocalization_node", name="relocalization",
                 output="screen", emulate_tty=True,
                 parameters=[LaunchConfiguration("params_file"), overrides])]


def _bag(context):
    bag = LaunchConfiguration("bag").perform(context)
    if not bag:
        return []
    return [Node(package=PKG, executable="bag_player", name="bag_player", output="screen",
                 arguments=[bag, "--rate", LaunchConfiguration("bag_rate").perform(context)])]


def generate_launch_description():
    args = [DeclareLaunchArgument(n, default_value=d, description=desc) for n, d, desc in ARGS]
    group = GroupAction([
        PushRosNamespace(LaunchConfiguration("namespace")),
        SetParameter("use_sim_time", LaunchConfiguration("use_sim_time")),
        OpaqueFunction(function=_node),
        OpaqueFunction(function=_bag),
        Node(package="rviz2", executable="rviz2", name="rviz", output="screen",
             condition=IfCondition(LaunchConfiguration("rviz")),
             arguments=["-d", PathJoinSubstitution([FindPackageShare(PKG), "rviz", "mast3r_ros.rviz"])]),
    ])
    return LaunchDescription([*args, group])
