"""Synthetic worlds with exact ground truth, for tests and evaluation only.

- ``scene``: procedural textured rooms (``make_scene``).
- ``render``: numpy ray caster, RGB + exact metric depth (``render``, ``pinhole_K``).
- ``trajectory``: camera paths (``make_trajectory``, ``relocalization_views``).
"""
