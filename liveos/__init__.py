"""liveos: turn an existing OS disk image into a bootable Live OS (UEFI ISO and PXE)."""
