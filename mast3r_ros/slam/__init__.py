"""SLAM core (ROS-free): mapping by incremental sparse global alignment, loop closure and
point clouds. Import from the submodules:

- ``alignment``: ``AlignmentConfig``, ``AlignmentProblem``, ``align_views``, scene graphs.
- ``mapper``: ``Mapper``, ``MapperConfig``, ``MapUpdate``, ``KeyframeData``.
- ``loop_closure``: ``LoopDetector``, ``LoopClosureConfig``, ``LoopCandidate``.
- ``point_cloud``: ``build_point_cloud``, ``voxel_downsample``.
- ``batch``: ``align_images`` (``mast3r-ros align``).

Nothing heavy is imported here.
"""
