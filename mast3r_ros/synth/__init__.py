"""Synthetic worlds with exact ground truth, for tests and evaluation only.

- ``scene``: procedural textured rooms (``make_scene``).
- ``render``: numpy ray caster, RGB + exact metric depth (``render``, ``pinhole_K``).
- ``trajectory``: camera paths (``make_trajectory``, ``relocalization_views``).
- ``sequence``: rendered frames with ground truth (``generate``, ``render_sequence``).
- ``bag``: rosbag2 writer/reader (``write_dataset``, ``write_bag``, ``read_bag``).
- ``simulator``: ``NetworkOutputSimulator``, a ``PairEngine`` built from ground truth
  (never a default engine), its noise profiles (``SimulatorProfile``, ``SimulatorConfig``,
  ``simulator_config_from``); ``simulator_stats``: their measured statistics.

Nothing heavy is imported here; import from the submodules.
"""
