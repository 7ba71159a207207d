"""3D geometry for VLAs: cameras, point maps from depth, patch-grid pooling, geometry token encoders.

Layering: this package depends on torch only; [`flowvla.envs.cameras`][flowvla.envs.cameras] wraps its camera
maths for numpy (simulator code), never the reverse."""

from flowvla.geometry.cameras import (
    MUJOCO_TO_OPENCV,
    camera_to_world_opencv,
    intrinsics_from_fovy,
    project_points,
    transform_points,
    zbuffer_to_metres,
)
from flowvla.geometry.encoders import (
    DenseFeatureEncoder,
    FourierPointEncoder,
    GeometryTokens,
    MLPPositionEncoder,
    fourier_features,
)
from flowvla.geometry.patches import PatchGrid, pool_to_grid, pool_to_patches, sub_patch_samples
from flowvla.geometry.point_maps import PointMap, pixel_rays, point_map_from_depth

__all__ = [
    "MUJOCO_TO_OPENCV",
    "DenseFeatureEncoder",
    "FourierPointEncoder",
    "GeometryTokens",
    "MLPPositionEncoder",
    "PatchGrid",
    "PointMap",
    "camera_to_world_opencv",
    "fourier_features",
    "intrinsics_from_fovy",
    "pixel_rays",
    "point_map_from_depth",
    "pool_to_grid",
    "pool_to_patches",
    "project_points",
    "sub_patch_samples",
    "transform_points",
    "zbuffer_to_metres",
]
