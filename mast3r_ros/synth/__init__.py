"""Synthetic worlds with exact ground truth, for tests and evaluation only.

- ``scene``: procedural textured rooms (``make_scene``).
- ``render``: numpy ray caster, RGB + exact metric depth (``render``, ``pinhole_K``).
- ``trajectory``: camera paths (``make_trajectory``, ``relocalization_views``).
- ``sequence``: rendered frames with ground truth (``generate``, ``render_sequence``).
- ``bag``: rosbag2 writer/reader (``write_dataset``, ``write_bag``, ``read_bag``).
- ``descriptors``: ``FourierDescriptorField``, the deterministic descriptor field both
  stand-in engines use.

Stand-in engines: ``PairEngine`` implementations that return what the network would, computed
from ground truth, so tests and evaluations run without weights. Always labelled as such,
never a default engine. They all live here:

- ``simulator.NetworkOutputSimulator``: 3D scenes of ``sequence`` - pointmaps, confidences and
  descriptors with controlled, correlated noise (tracking, relocalization, mapping, the nodes);
  its noise profiles (``SimulatorProfile``, ``SimulatorConfig``, ``simulator_config_from``);
  ``simulator_stats``: their measured statistics.
- ``homography.HomographyDescriptorEngine``: a textured plane under a known homography -
  descriptors only, exact on any crop or resolution (matching, coarse-to-fine); with
  ``homography.homography_pair`` for raw descriptor maps (``bench-match``).

Nothing heavy is imported here; import from the submodules.
"""
