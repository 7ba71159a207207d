"""Datasets: LIBERO HDF5 and LeRobot readers, the HDF5 writer, training items, statistics, collate.

The scripted-demonstration generator needs the simulator as well as these datasets, so it lives above
both, in [`flowvla.recipes.generate`][flowvla.recipes.generate]."""
