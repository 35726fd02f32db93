"""ROS-free relocalization: reference store, retrieval by global descriptor, pair
verification (FRM + PnP / essential matrix with metric scale), scale-free fusion of several
references, map save/load. See ``Relocalizer``."""
from mast3r_ros.reloc.config import RelocConfig, RelocResult
from mast3r_ros.reloc.relocalizer import MAP_KIND, Relocalizer, check_image, check_pose, engine_identity
from mast3r_ros.reloc.store import Reference, ReferenceStore

__all__ = ["RelocConfig", "RelocResult", "Relocalizer", "Reference", "ReferenceStore", "MAP_KIND",
           "check_image", "check_pose", "engine_identity"]
