"""Episode sources: one small reader per format (LeRobot, folder, HDF5) behind one protocol."""
