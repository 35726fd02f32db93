"""config/slam.yaml and rviz/mast3r_ros.rviz against the node's real parameter set and the
topic names of ROS_API.md."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, name + "."))
        else:
            out[name] = v
    return out


def test_slam_yaml_sets_exactly_the_declared_parameters_with_their_defaults():
    """A key the node does not declare would be silently ignored by rclpy: so the file's
    keys must equal the node's parameters, and its values the defaults of the code."""
    pytest.importorskip("rclpy", reason="rclpy not installed")
    from mast3r_ros.ros.config_params import flatten_defaults
    from mast3r_ros.ros.params import COMMON_PARAMETERS
    from mast3r_ros.ros.slam_node import NodeOptions
    from mast3r_ros.slam import TrackerConfig

    doc = yaml.safe_load((REPO / "config" / "slam.yaml").read_text())
    (block_name, block), = doc.items()
    assert block_name == "/**"
    got = _flatten(block["ros__parameters"])
    want = {k: v[0] for k, v in COMMON_PARAMETERS.items()}
    want.update({f.name: f.default for f in dataclasses.fields(NodeOptions)})
    want.update(flatten_defaults(TrackerConfig, "tracking"))
    # reloc.*: every RelocConfig field is declared; the file sets the usual few
    reloc = {k: v for k, v in got.items() if k.startswith("reloc.")}
    assert len(reloc) >= 3
    try:
        from mast3r_ros.reloc import RelocConfig
    except ImportError:
        pytest.skip("the relocalization core is not in this build")
    want.update({k: v for k, v in flatten_defaults(RelocConfig, "reloc").items() if k in reloc})
    assert sorted(got) == sorted(want)
    for k, v in want.items():
        assert got[k] == pytest.approx(v) if isinstance(v, float) else got[k] == v, k


def test_mapping_yaml_sets_the_mapping_nodes_own_parameters_with_their_defaults():
    """config/mapping.yaml holds exactly mapping_node's own parameters (the common ones come
    from slam.yaml, given first) and some mapper.* ones, each at the code's default."""
    pytest.importorskip("rclpy", reason="rclpy not installed")
    from mast3r_ros.ros.config_params import flatten_defaults
    from mast3r_ros.ros.mapping_node import MappingOptions
    from mast3r_ros.slam.mapper import MapperConfig

    text = (REPO / "config" / "mapping.yaml").read_text()
    doc = yaml.safe_load(text)
    (block_name, block), = doc.items()
    assert block_name == "/**"
    got = _flatten(block["ros__parameters"])
    want = {f.name: f.default for f in dataclasses.fields(MappingOptions)}
    mapper = {k: v for k, v in got.items() if k.startswith("mapper.")}
    assert len(mapper) >= 3
    defaults = flatten_defaults(MapperConfig, "mapper")
    assert set(mapper) <= set(defaults), sorted(set(mapper) - set(defaults))
    want.update({k: defaults[k] for k in mapper})
    assert sorted(got) == sorted(want)
    for k, v in want.items():
        assert got[k] == pytest.approx(v) if isinstance(v, float) else got[k] == v, k
    params = [ln for ln in text.splitlines() if re.match(r"^\s+[a-z_]+:\s*\S", ln)]
    assert params and not [ln for ln in params if "#" not in ln]


def test_every_parameter_line_of_slam_yaml_has_a_comment():
    lines = (REPO / "config" / "slam.yaml").read_text().splitlines()
    params = [ln for ln in lines if re.match(r"^\s+[a-z_]+:\s*\S", ln)]
    assert len(params) > 40
    missing = [ln for ln in params if "#" not in ln]
    assert not missing, missing


def test_rviz_config_shows_the_api_topics():
    doc = yaml.safe_load((REPO / "rviz" / "mast3r_ros.rviz").read_text())
    vm = doc["Visualization Manager"]
    assert vm["Global Options"]["Fixed Frame"] == "map"
    displays = {d["Class"].split("/")[-1]: d for d in vm["Displays"]} | {
        d["Name"]: d for d in vm["Displays"]}
    topics = {d["Name"]: d.get("Topic", {}).get("Value") for d in vm["Displays"]}
    assert topics["Tracking path"] == "/mast3r/tracking/path"
    assert topics["Keyframe path"] == "/mast3r/map/keyframe_path"
    assert topics["Keyframes"] == "/mast3r/map/keyframes"
    assert topics["Map points"] == "/mast3r/map/points"
    assert topics["Camera image"] == "/camera/image_raw"
    assert {"TF", "Image", "PointCloud2", "MarkerArray", "Path", "Grid"} <= set(displays)
    assert displays["Map points"]["Color Transformer"] == "RGB8"
    # latched topics are read transient-local, the camera best-effort (sensor data)
    for name in ("Keyframe path", "Keyframes", "Map points"):
        assert displays[name]["Topic"]["Durability Policy"] == "Transient Local"
    assert displays["Camera image"]["Topic"]["Reliability Policy"] == "Best Effort"
    assert all(d["Class"].startswith("rviz_default_plugins/") for d in vm["Displays"])
