"""Datasets: LIBERO HDF5 and LeRobot readers, the HDF5 writer, training items, statistics, collate."""
