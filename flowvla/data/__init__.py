"""Datasets: LIBERO HDF5 and LeRobot readers, the HDF5 writer, training items, statistics, collate.

The scripted-demonstration generator needs the simulator as well as these datasets, so it lives above
both, in [`flowvla.recipes.generate`][flowvla.recipes.generate].

Its public names are re-exported here, each imported on first use (the modules pull optional
dependencies), so ``import flowvla.data`` itself is cheap.
"""

from __future__ import annotations

from flowvla._lazy import lazy_exports

__all__ = [
    "ChunkDataset",
    "EpisodeSource",
    "FeatureStats",
    "HDF5Source",
    "ImageAugment",
    "LeRobotSource",
    "LiberoHDF5Reader",
    "LiberoHDF5Writer",
    "Normalizer",
    "collate",
    "compute_stats",
    "export_lerobot",
    "find_demo_files",
    "merge_hdf5",
    "pad_state",
]

_LAZY = {
    "ChunkDataset": "flowvla.data.dataset",
    "EpisodeSource": "flowvla.data.dataset",
    "FeatureStats": "flowvla.data.stats",
    "HDF5Source": "flowvla.data.dataset",
    "ImageAugment": "flowvla.data.augment",
    "LeRobotSource": "flowvla.data.lerobot",
    "LiberoHDF5Reader": "flowvla.data.hdf5",
    "LiberoHDF5Writer": "flowvla.data.hdf5",
    "Normalizer": "flowvla.data.stats",
    "collate": "flowvla.data.batch",
    "compute_stats": "flowvla.data.stats",
    "export_lerobot": "flowvla.data.lerobot_export",
    "find_demo_files": "flowvla.data.hdf5",
    "merge_hdf5": "flowvla.data.hdf5",
    "pad_state": "flowvla.data.batch",
}


__getattr__ = lazy_exports(__name__, _LAZY)
