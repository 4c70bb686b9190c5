"""Initramfs: the two ways a live OS starts (see :class:`Initramfs`).

:mod:`.dracut` (bootstrap initrds by the image's dracut), :mod:`.liveargs` (the live kernel
arguments that dracut understands), :mod:`.livenet` (whether it can download over the network),
:mod:`.fullos` (the whole OS as a CPIO), :mod:`.initrd` (the :class:`Initramfs` value).
"""

from __future__ import annotations

from liveos.initramfs.dracut import DracutInfo
from liveos.initramfs.initrd import Initramfs

__all__ = ["DracutInfo", "Initramfs"]
