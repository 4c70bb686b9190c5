"""Host operations, all the privileged ones: loop devices, mounts, overlays, chroots, signals."""
