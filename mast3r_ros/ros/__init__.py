"""ROS 2 layer: message conversions and thin nodes over the ROS-free core.

This is the only part of mast3r_ros that imports rclpy or ROS message packages.
"""
