"""Staging of the media tree, shared by every output: :mod:`.plan` (what goes where, decided from
the customised image), :mod:`.grubedit` (the media's grub.cfg), :mod:`.rebuild` (re-editing
media liveos built before), :mod:`.stage` (running the OS build steps of a plan)."""
