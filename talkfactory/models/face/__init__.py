"""Face detection, the 478-point mesh, and temporally smoothed face tracks."""
