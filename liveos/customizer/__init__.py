"""Image Customizer's YAML configs, as its users write them, turned into live media.

    with LiveOS.open("disk.qcow2") as live:
        result = build_from_config(live, "iso-bootstrap.yaml")        # output: from the config
        # or: live.with_config("pxe.yaml").write_pxe("pxe/", base_url=...)

:mod:`~liveos.customizer.yamlmodel` reads the YAML as nodes with lines (bounded, safe, no
aliases), :mod:`~liveos.customizer.schema` checks it into frozen dataclasses (the ``iso:``,
``pxe:``, ``os:``, ``scripts:`` and ``output:`` keys liveos supports; every other key of the
reference schema is refused by name and line), :mod:`~liveos.customizer.apply` applies it.
"""

from __future__ import annotations

from liveos.customizer.apply import build_from_config, configure, output_target
from liveos.customizer.schema import Config, ImageFormat, load_config

__all__ = ["Config", "ImageFormat", "build_from_config", "configure", "load_config", "output_target"]
