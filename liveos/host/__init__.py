"""Host operations, all the privileged ones: loop devices, mounts and overlays in a private mount
namespace, the sandbox for programs from images, signals."""
