"""slam_node's maps that last (issue 10 item 3) with real rclpy, real services and topics, a
real synthetic rosbag2 and the network-output SIMULATOR standing in for MASt3R.

One world, two trajectories (``two_walks``): node 1 maps the mapping walk and saves the map
(``save_map``), and is destroyed; node 2 starts with ``map_path`` and ``localization_only:
true`` and relocalizes (service ``relocalize``) and tracks (topic ``image``) frames of the
OTHER walk, judged in the map (a Sim(3) fitted on the map's keyframe centres only). Node 2
refuses a map with an inconsistent mapper array and a corrupted one, and keeps serving with
its map unchanged; the saved folder is byte for byte the same after node 2's run. A
corrupted ``map_path`` at start is a parameter error naming it.
"""
from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from mast3r_ros.maps import load_map_folder, save_map_folder
from mast3r_ros.synth.bag import write_bag

from two_walks import folder_digest, map_alignment, pose_errors, two_walks

try:  # no module-level importorskip (see test_slam_node.py)
    import rclpy
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.parameter import Parameter
    from geometry_msgs.msg import PoseStamped
    from sensor_msgs.msg import CameraInfo, Image

    from mast3r_ros.msg import TrackingStatus
    from mast3r_ros.ros import params
    from mast3r_ros.ros.conversions import K_to_camera_info, array_to_image, pose_to_matrix
    from mast3r_ros.ros.paths import header, stamp_ns_of
    from mast3r_ros.ros.slam_node import Role, SlamNode
    from mast3r_ros.srv import GetKeyframes, LoadMap, Relocalize, SaveMap
    _SKIP = ""
except ImportError as exc:
    _SKIP = f"rclpy or the generated interfaces missing (run scripts/setup.sh): {exc}"

pytestmark = [pytest.mark.ros, pytest.mark.slow, pytest.mark.skipif(bool(_SKIP), reason=_SKIP)]

W, H, NET = 256, 192, 128
N_MAP, N_QUERY = 18, 12
PROFILE = "realistic"
TOL_M, TOL_DEG, MIN_OK = 0.25, 2.0, 0.9


class NodeRun:
    """A ``slam_node`` in this process on its own context, a client node, one executor."""

    def __init__(self, bag: Path, extra: dict | None = None, ns: str = "mast3r") -> None:
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx)
        values = {"engine": "simulator", "simulator_bag": str(bag), "device": "cpu",
                  "image_size": NET, "simulator_profile": PROFILE, "mapping": True, **(extra or {})}
        self.ns = ns
        self.node = None
        try:
            self.node = SlamNode(Role.SLAM, context=self.ctx, namespace=ns,
                                 cli_args=["--ros-args", "-r", "image:=/maps_test/image",
                                           "-r", "camera_info:=/maps_test/camera_info"],
                                 parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])
        except BaseException:
            rclpy.try_shutdown(context=self.ctx)
            raise
        self.io = rclpy.create_node("maps_test_io", context=self.ctx)
        self.pub_img = self.io.create_publisher(Image, "/maps_test/image", 10)
        self.pub_info = self.io.create_publisher(CameraInfo, "/maps_test/camera_info", 10)
        self.cond = threading.Condition()
        self.status: dict[int, object] = {}
        self.poses: dict[int, np.ndarray] = {}
        self.io.create_subscription(TrackingStatus, f"/{ns}/tracking/status", self._on_status, 100)
        self.io.create_subscription(PoseStamped, f"/{ns}/tracking/pose", self._on_pose, 100)
        self.ex = MultiThreadedExecutor(num_threads=4, context=self.ctx)
        self.ex.add_node(self.node)
        self.ex.add_node(self.io)
        self.thread = threading.Thread(target=self.ex.spin, daemon=True)
        self.thread.start()
        self.clients: dict = {}
        end = time.monotonic() + 30
        while time.monotonic() < end and not (self.pub_img.get_subscription_count()
                                              and self.node.pub_status.get_subscription_count()
                                              and self.node.pub_pose.get_subscription_count()):
            time.sleep(0.02)

    def _on_status(self, m) -> None:
        with self.cond:
            self.status[stamp_ns_of(m.header.stamp)] = m
            self.cond.notify_all()

    def _on_pose(self, m) -> None:
        self.poses[stamp_ns_of(m.header.stamp)] = pose_to_matrix(m.pose)

    def feed(self, frames, timeout: float = 120.0) -> list:
        """Publish frames in lockstep (each waits for its tracking/status); their statuses."""
        out = []
        for f in frames:
            h, w = f.rgb.shape[:2]
            hdr = header(f.stamp_ns, "camera_optical_frame")
            self.pub_info.publish(K_to_camera_info(f.K, w, h, hdr))
            end = time.monotonic() + 5
            while self.node._K_info is None and time.monotonic() < end:
                time.sleep(0.01)
            self.pub_img.publish(array_to_image(f.rgb, "rgb8", hdr))
            with self.cond:
                assert self.cond.wait_for(lambda: f.stamp_ns in self.status, timeout), \
                    f"no tracking/status for {f.frame_id}"
            out.append(self.status[f.stamp_ns])
        time.sleep(0.2)  # the last pose reaches us
        return out

    def call(self, srv_type, name: str, request, timeout: float = 120.0):
        if name not in self.clients:
            c = self.io.create_client(srv_type, f"/{self.ns}/{name}")
            assert c.wait_for_service(timeout_sec=30.0), name
            self.clients[name] = c
        fut = self.clients[name].call_async(request)
        end = time.monotonic() + timeout
        while not fut.done() and time.monotonic() < end:
            time.sleep(0.005)
        assert fut.done(), f"{name} not answered within {timeout} s"
        return fut.result()

    def keyframes(self) -> dict[int, np.ndarray]:
        r = self.call(GetKeyframes, "get_keyframes", GetKeyframes.Request())
        assert r.success, r.message
        return {stamp_ns_of(k.header.stamp): pose_to_matrix(k.pose) for k in r.keyframes}

    def close(self) -> None:
        self.ex.shutdown()
        self.node.destroy_node()
        self.io.destroy_node()
        rclpy.try_shutdown(context=self.ctx)
        self.thread.join(timeout=10)


def _reloc_request(f):
    h, w = f.rgb.shape[:2]
    hdr = header(f.stamp_ns, "camera_optical_frame")
    return Relocalize.Request(image=array_to_image(f.rgb, "rgb8", hdr),
                              camera_info=K_to_camera_info(f.K, w, h, hdr))


@pytest.fixture(scope="module")
def saved(tmp_path_factory, one_torch_thread):
    """Node 1 maps the mapping walk, saves the map, and is destroyed."""
    out = tmp_path_factory.mktemp("slam_node_maps")
    seq, n_map = two_walks(N_MAP, N_QUERY, width=W, height=H)
    bag = write_bag(seq, out / "bag")
    run = NodeRun(bag)
    try:
        st = run.feed(seq.frames[:n_map])
        kfs = run.keyframes()
        path = out / "map"
        r = run.call(SaveMap, "save_map", SaveMap.Request(map_path=str(path)))
        assert r.success and r.num_keyframes == len(kfs) >= 4, r.message
    finally:
        run.close()
    print(f"\nnode 1: {n_map} frames, {len(kfs)} keyframes, states "
          f"{''.join(s.state_name[0] for s in st)}")
    return seq, n_map, bag, path, kfs


def test_restarted_node_localizes_another_trajectory_in_the_saved_map(saved, tmp_path):
    seq, n_map, bag, path, kfs = saved
    digest = folder_digest(path)
    sim = map_alignment(kfs, seq)
    run = NodeRun(bag, {"map_path": str(path), "localization_only": True}, ns="mast3r_loc")
    try:
        got = run.keyframes()
        assert sorted(got) == sorted(kfs)
        for s in kfs:
            np.testing.assert_allclose(got[s], kfs[s], atol=1e-9)
        queries = seq.frames[n_map:]
        # the relocalize service, frame by frame
        t, r = [], []
        for f in queries:
            resp = run.call(Relocalize, "relocalize", _reloc_request(f))
            if not resp.success:
                t.append(np.inf)
                r.append(np.inf)
                continue
            te, re = pose_errors(pose_to_matrix(resp.pose.pose.pose), f.T_world_cam, sim)
            t.append(te)
            r.append(re)
        t, r = np.array(t), np.array(r)
        ok = (t <= TOL_M) & (r <= TOL_DEG)
        # tracking in the map: the other walk on the image topic
        st = run.feed(queries)
        tt, tr = [], []
        for f in queries:
            T = run.poses.get(f.stamp_ns)
            te, re = (np.inf, np.inf) if T is None else pose_errors(T, f.T_world_cam, sim)
            tt.append(te)
            tr.append(re)
        tt, tr = np.array(tt), np.array(tr)
        ok_t = (tt <= TOL_M) & (tr <= TOL_DEG)
        print(f"\n[{PROFILE}] node 2 relocalize: {ok.mean():.0%} of {len(ok)} within {TOL_M} m / "
              f"{TOL_DEG} deg, median {np.median(t):.3f} m / {np.median(r):.2f} deg; tracking: "
              f"{ok_t.mean():.0%} within, median {np.median(tt):.3f} m / {np.median(tr):.2f} deg, "
              f"states {''.join(s.state_name[0] for s in st)} (load {os.getloadavg()[0]:.1f})")
        assert ok.mean() >= MIN_OK, (np.round(t, 3), np.round(r, 2))
        assert ok_t.mean() >= MIN_OK, (np.round(tt, 3), np.round(tr, 2))
        assert all(s.num_keyframes == len(kfs) for s in st), "localization mode added keyframes"
        after = run.keyframes()
        for s in kfs:
            np.testing.assert_array_equal(after[s], got[s])

        # a map with an inconsistent mapper array, and a corrupted one: refused, still serving
        manifest, arrays = load_map_folder(path)
        for k in ("format_version", "created_utc", "arrays", "arrays_sha256"):
            manifest.pop(k)
        pv = arrays["mapper.pair_views"].copy()
        pv[0, 0] = 999
        arrays["mapper.pair_views"] = pv
        save_map_folder(tmp_path / "inconsistent", manifest, arrays)
        corrupt = tmp_path / "corrupt"
        shutil.copytree(path, corrupt)
        npz = corrupt / "arrays.npz"
        b = bytearray(npz.read_bytes())
        b[len(b) // 2] ^= 0xFF
        npz.write_bytes(bytes(b))
        for bad, why in ((tmp_path / "inconsistent", "pair_views"), (corrupt, "checksum mismatch")):
            resp = run.call(LoadMap, "load_map", LoadMap.Request(map_path=str(bad)))
            assert not resp.success and why in resp.message, resp.message
            print(f"refused: {resp.message}")
        still = run.keyframes()
        assert sorted(still) == sorted(after)
        for s in after:
            np.testing.assert_array_equal(still[s], after[s])
        resp = run.call(Relocalize, "relocalize", _reloc_request(queries[0]))
        assert resp.success, resp.message
    finally:
        run.close()
    assert folder_digest(path) == digest, "the saved map changed"


def test_corrupted_map_path_at_start_is_a_parameter_error(saved, tmp_path):
    seq, n_map, bag, path, kfs = saved
    corrupt = tmp_path / "corrupt"
    shutil.copytree(path, corrupt)
    (corrupt / "manifest.json").write_text("{not json")
    with pytest.raises(params.ParameterError, match="map_path.*bad JSON"):
        NodeRun(bag, {"map_path": str(corrupt), "localization_only": True}, ns="mast3r_bad")
