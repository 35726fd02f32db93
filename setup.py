"""pip entry point for the ROS-free library and the `mast3r-ros` command.

Inside a ROS 2 workspace the package is built by colcon through CMakeLists.txt
(ament_cmake + rosidl); this file is not used there.
"""
from setuptools import setup

setup()
