"""Rich views of a real opened image, of LiveOS and of a plan (no build): they show the OS, the
partitions and the kernel, start no process and change nothing in the tree."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from liveos.image import DiskImage
from liveos.live import LiveOS
from tests.conftest import FixtureImageFactory
from tests.unit.test_views import pretty, text_of

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="loop devices and mounts need root"),
]


def test_views_of_the_azl_image_live_and_plan(
    fixture_image: FixtureImageFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fixture = fixture_image("azl", "qcow2")
    with LiveOS.open(fixture.path, workdir=tmp_path) as opened:
        live = opened.with_label("VIEWS").with_kernel_args("quiet")
        os_name = live.rootfs.os_release()["PRETTY_NAME"]
        plan = live.plan()

        def refuse(*args: object, **kwargs: object) -> None:
            raise AssertionError(f"a view started a process: {args[1:2]}")

        monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
        image = live.image
        assert isinstance(image, DiskImage)
        partitions = len(image.partitions)
        line = repr(image)
        image_html, image_text = image._repr_html_(), pretty(image)
        live_html, live_text = live._repr_html_(), pretty(live)
        plan_html, plan_text = plan._repr_html_(), pretty(plan)
        monkeypatch.undo()
        assert image.changes() == ()  # looking wrote nothing

    assert "\n" not in line and line.startswith(
        f"<DiskImage qcow2 {fixture.path} gpt {partitions} partitions, "
    )
    assert os_name in line and "1 kernel>" in line
    image_facts = text_of(image_html)
    for fact in (
        os_name,
        fixture.kernel_version,
        fixture.root_fstype,
        "ESP",
        "/boot/efi",
        "/boot/grub2",
        "x64",
    ):
        assert fact in image_facts, fact
        assert fact in image_text, fact
    assert "/boot/efi/EFI/BOOT" in image_facts and "unreadable" not in image_facts

    live_facts = text_of(live_html)
    for fact in ("VIEWS", "quiet", "compression_level", "changed", os_name, fixture.kernel_version):
        assert fact in live_facts, fact
    assert "* label = VIEWS" in live_text and os_name in live_text and fixture.kernel_version in live_text

    plan_facts = text_of(plan_html)
    for fact in ("VIEWS", "root=live:CDLABEL=VIEWS", "quiet", fixture.kernel_version, "/liveos/rootfs.img"):
        assert fact in plan_facts, fact
    assert plan_text == plan.describe() and repr(plan).startswith("<BuildPlan iso bootstrap VIEWS x64")

    assert repr(image) == f"<DiskImage qcow2 {fixture.path} (closed)>"  # after the with block
