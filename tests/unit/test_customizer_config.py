"""Image Customizer configs: the reference tool's config shapes parse to the expected model, and
every invalid config gives one UsageError naming the key path and the right line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from liveos.cli import main
from liveos.customizer.apply import (
    OutputTarget,
    apply_os,
    check_bootstrap_url,
    output_target,
    prepare_output,
    write_os_file,
)
from liveos.customizer.schema import (
    Config,
    ImageFormat,
    MediaConfig,
    OsConfig,
    OsFile,
    Packages,
    Script,
    SELinuxMode,
    load_config,
)
from liveos.customizer.yamlmodel import MAX_CONFIG_BYTES
from liveos.errors import UsageError
from liveos.mediafiles import MediaFile
from liveos.rootfs import RootFs
from liveos.settings import InitramfsMode, KdumpBootFiles, OutputKind

NETWORK = "[Match]\nName=e*\n[Network]\nDHCP=yes\n"


def write_config(folder: Path, text: str, name: str = "config.yaml") -> Path:
    (folder / "files").mkdir(exist_ok=True)
    (folder / "files" / "89-ethernet.network").write_text(NETWORK)
    (folder / "files" / "89-ethernet.network").chmod(0o640)
    (folder / "scripts").mkdir(exist_ok=True)
    (folder / "scripts" / "setup.sh").write_text("#!/bin/sh\necho set up\n")
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


# -- valid configs, shaped like the reference tool's testdata/iso-*.yaml and pxe-*.yaml ----------
ISO_BOOTSTRAP = """\
    iso:
      initramfsType: bootstrap

    os:
      selinux:
        mode: enforcing

      packages:
        install:
        # iso required packages
        - squashfs-tools
        - tar
        - curl

      additionalFiles:
        # Enable DHCP client on all of the physical NICs.
      - source: files/89-ethernet.network
        destination: /etc/systemd/network/89-ethernet.network
    """


def test_iso_bootstrap_config(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, ISO_BOOTSTRAP))
    assert config.iso == MediaConfig(initramfs=InitramfsMode.BOOTSTRAP)
    assert config.pxe is None
    assert config.os == OsConfig(
        selinux=SELinuxMode.ENFORCING,
        packages=Packages(install=("squashfs-tools", "tar", "curl")),
        files=(
            OsFile(
                "/etc/systemd/network/89-ethernet.network", source=tmp_path / "files/89-ethernet.network"
            ),
        ),
    )
    assert config.default_kind() is OutputKind.ISO
    assert config.output_format is None and config.output_path is None
    assert config.changes_os


ISO_FULL_OS = """\
    iso:
      initramfsType: full-os
      kdumpBootFiles: keep
      kernelCommandLine:
        extraCommandLine:
        - rd.info
        - "console=ttyS0,115200"
      additionalFiles:
      - source: files/89-ethernet.network
        destination: /cloud-init-data/network-config
      - content: |
          instance-id: live
        destination: /cloud-init-data/meta-data
        permissions: "600"

    previewFeatures:
    - kdump-boot-files

    os:
      hostname: live-host
      selinux:
        mode: disabled
      kernelCommandLine:
        extraCommandLine:
        - "selinux=0"
      services:
        enable:
        - ssh
        disable:
        - apt-daily.timer

    scripts:
      postCustomization:
      - path: scripts/setup.sh
        arguments: [one, "two words"]
        environmentVariables:
          GREETING: hello
          PORT: 8080
      finalizeCustomization:
      - content: |
          print("done")
        interpreter: python3
        name: finish

    output:
      image:
        format: iso
        path: out/live.iso
    """


def test_iso_full_os_config(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, ISO_FULL_OS))
    assert config.iso == MediaConfig(
        kernel_args=("rd.info", "console=ttyS0,115200"),
        files=(
            MediaFile(
                "/cloud-init-data/network-config", source=tmp_path / "files/89-ethernet.network", mode=0o640
            ),
            MediaFile("/cloud-init-data/meta-data", content=b"instance-id: live\n", mode=0o600),
        ),
        initramfs=InitramfsMode.FULL_OS,
        kdump_boot_files=KdumpBootFiles.KEEP,
    )
    assert config.os == OsConfig(
        hostname="live-host",
        selinux=SELinuxMode.DISABLED,
        kernel_args=("selinux=0",),
        enable_services=("ssh",),
        disable_services=("apt-daily.timer",),
    )
    assert config.post_customization == (
        Script(
            path=tmp_path / "scripts/setup.sh",
            arguments=("one", "two words"),
            environment=(("GREETING", "hello"), ("PORT", "8080")),
        ),
    )
    assert config.finalize_customization == (
        Script(content='print("done")\n', interpreter="python3", name="finish"),
    )
    assert config.preview_features == ("kdump-boot-files",)
    assert config.output_format is ImageFormat.ISO
    assert config.output_path == tmp_path / "out/live.iso"  # relative to the config's folder


PXE_BOOTSTRAP = """\
    # Differs from the ISO configs in its pxe section.
    pxe:
      initramfsType: bootstrap
      bootstrapBaseUrl: http://192.168.123.1:8080
      additionalFiles:
      - source: files/89-ethernet.network
        destination: /etc-files/89-ethernet.network
        permissions: 644

    os:
      packages:
        install:
        - hello
        remove:
        - nano
        updateExistingPackages: false

    output:
      image:
        format: pxe-dir
    """


def test_pxe_bootstrap_config_with_base_url(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, PXE_BOOTSTRAP))
    assert config.pxe == MediaConfig(
        files=(
            MediaFile(
                "/etc-files/89-ethernet.network", source=tmp_path / "files/89-ethernet.network", mode=0o644
            ),
        ),
        initramfs=InitramfsMode.BOOTSTRAP,
        base_url="http://192.168.123.1:8080",
    )
    assert config.os == OsConfig(packages=Packages(install=("hello",), remove=("nano",)))
    assert config.default_kind() is OutputKind.PXE
    assert config.media(OutputKind.ISO) == MediaConfig()  # an ISO build of it takes the defaults
    target = output_target(config, tmp_path / "bundle")
    assert (target.format, target.path) == (ImageFormat.PXE_DIR, tmp_path / "bundle")
    check_bootstrap_url(config, target)  # the config's URL is enough


PXE_FULL_OS_TAR = """\
    pxe:
      initramfsType: full-os
      kdumpBootFiles: none

    os:
      selinux:
        mode: disabled
      kernelCommandLine:
        extraCommandLine:
        - "selinux=0"
      packages:
        install:
        - hello
        update:
        - tar
        updateExistingPackages: true
      additionalFiles:
      - source: files/89-ethernet.network
        destination: /etc/systemd/network/89-ethernet.network
        permissions: 0644
      - content: ""
        destination: /etc/empty

    output:
      image:
        format: pxe-tar
        path: pxe.tar.gz
    """


def test_pxe_full_os_tar_config(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, PXE_FULL_OS_TAR))
    assert config.pxe == MediaConfig(initramfs=InitramfsMode.FULL_OS, kdump_boot_files=KdumpBootFiles.NONE)
    assert config.os is not None
    assert config.os.packages == Packages(install=("hello",), update=("tar",), update_existing=True)
    assert config.os.files == (
        OsFile(
            "/etc/systemd/network/89-ethernet.network",
            source=tmp_path / "files/89-ethernet.network",
            permissions=0o644,
        ),
        OsFile("/etc/empty", content=b""),
    )
    target = output_target(config)
    assert (target.format, target.path) == (ImageFormat.PXE_TAR, tmp_path / "pxe.tar.gz")


def test_defaults_follow_the_reference() -> None:
    """initramfsType: bootstrap for an ISO, full-os for PXE; an empty section is a section."""
    config = load_config({"iso": None, "pxe": {}})
    assert config.iso == MediaConfig() and config.pxe == MediaConfig()
    assert config.initramfs(OutputKind.ISO) is InitramfsMode.BOOTSTRAP
    assert config.initramfs(OutputKind.PXE) is InitramfsMode.FULL_OS
    assert config.default_kind() is OutputKind.ISO
    assert not config.changes_os
    empty = load_config({})
    assert empty == Config(folder=Path.cwd())


def test_a_mapping_is_a_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_config(tmp_path, "{}")
    monkeypatch.chdir(tmp_path)
    config = load_config(
        {
            "pxe": {"initramfsType": "bootstrap", "bootstrapFileUrl": "https://h/pxe/my.iso"},
            "os": {"additionalFiles": [{"source": "files/89-ethernet.network", "destination": "/etc/n"}]},
        }
    )
    assert config.pxe == MediaConfig(initramfs=InitramfsMode.BOOTSTRAP, file_url="https://h/pxe/my.iso")
    assert config.os is not None and config.os.files[0].source == tmp_path / "files/89-ethernet.network"
    with pytest.raises(UsageError, match=r"<mapping>: pxe\.initramfsType: invalid value 'bootstrapp'"):
        load_config({"pxe": {"initramfsType": "bootstrapp"}})


def test_output_flags_override_the_config(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, ISO_FULL_OS))
    target = output_target(config, "elsewhere.tar.gz", "pxe-tar")
    assert (target.format, target.path) == (ImageFormat.PXE_TAR, Path("elsewhere.tar.gz"))
    bare = load_config(write_config(tmp_path, ISO_BOOTSTRAP, "bare.yaml"))
    with pytest.raises(UsageError, match="no output format"):
        output_target(bare, "x.iso")
    with pytest.raises(UsageError, match="no output path"):
        output_target(bare, None, "iso")


def test_bootstrap_pxe_without_url_is_refused_before_building(tmp_path: Path) -> None:
    config = load_config({"pxe": {"initramfsType": "bootstrap"}})
    target = output_target(config, tmp_path / "pxe", "pxe-dir")
    with pytest.raises(UsageError, match="no bootstrap URL"):
        check_bootstrap_url(config, target)
    check_bootstrap_url(config, target, base_url="http://10.0.2.100/")


# -- invalid configs: one UsageError each, with the key path and the line ---------------------
INVALID = {
    "unknown key": (
        "iso:\n  initramfsType: bootstrap\n  kernelCommandline: {}\n",
        "iso.kernelCommandline: unknown key",
        3,
    ),
    "unknown top-level key": ("os: {}\nisos: {}\n", "isos: unknown key", 2),
    "wrong type": ("os:\n  hostname:\n  - a\n", "os.hostname: expected a string, found a list", 3),
    "null item": (
        "os:\n  packages:\n    install:\n    - hello\n    -\n",
        "os.packages.install[1]: expected a string, found empty (null)",
        5,
    ),
    "list expected": (
        "iso:\n  kernelCommandLine:\n    extraCommandLine: quiet\n",
        "iso.kernelCommandLine.extraCommandLine: expected a list, found a string",
        3,
    ),
    "mapping expected": ("pxe:\n- bootstrap\n", "pxe: expected a mapping", 2),
    "storage": ("iso: {}\nstorage:\n  disks: []\n", "storage: is not supported by liveos", 2),
    "uki": ("os:\n  uki:\n    mode: create\n", "os.uki: is not supported by liveos", 2),
    "bootloader reset": (
        "os:\n  hostname: a\n  bootloader:\n    resetType: hard-reset\n",
        "os.bootloader: is not supported by liveos",
        3,
    ),
    "users": ("os:\n  users:\n  - name: test\n", "os.users: is not supported by liveos", 2),
    "verity (under storage)": ("storage:\n  verity: []\n", "storage: is not supported by liveos", 1),
    "package lists": (
        "os:\n  packages:\n    installLists: [a.yaml]\n",
        "os.packages.installLists: is not supported",
        3,
    ),
    "output artifacts": ("output:\n  artifacts:\n    path: x\n", "output.artifacts: is not supported", 2),
    "disk output format": (
        "output:\n  image:\n    format: vhdx\n",
        "output.image.format: liveos builds live media, not 'vhdx'",
        3,
    ),
    "both source and content": (
        "iso:\n  additionalFiles:\n  - source: files/89-ethernet.network\n"
        "    content: x\n    destination: /a\n",
        "iso.additionalFiles[0].content: cannot specify both 'source' and 'content'",
        4,
    ),
    "neither source nor content": (
        "os:\n  additionalFiles:\n  - destination: /a\n",
        "os.additionalFiles[0]: must specify either 'source' or 'content'",
        3,
    ),
    "missing source file": (
        "os:\n  additionalFiles:\n  - source: files/nope\n    destination: /a\n",
        "os.additionalFiles[0].source: the source file",
        3,
    ),
    "bad permissions": (
        'iso:\n  additionalFiles:\n  - content: x\n    destination: /a\n    permissions: "698"\n',
        "iso.additionalFiles[0].permissions: invalid permissions '698'",
        5,
    ),
    "setuid permissions": (
        "os:\n  additionalFiles:\n  - content: x\n    destination: /a\n    permissions: 4755\n",
        "os.additionalFiles[0].permissions: invalid permissions '4755'",
        5,
    ),
    "bad initramfsType": ("pxe:\n  initramfsType: full\n", "pxe.initramfsType: invalid value 'full'", 2),
    "bad kdumpBootFiles": ("iso:\n  kdumpBootFiles: all\n", "iso.kdumpBootFiles: invalid value 'all'", 2),
    "bad selinux mode": (
        "os:\n  selinux:\n    mode: strict\n",
        "os.selinux.mode: invalid value 'strict'",
        3,
    ),
    "relative media destination": (
        "iso:\n  additionalFiles:\n  - content: x\n    destination: cloud-init/user-data\n",
        "iso.additionalFiles[0].destination: media file destination 'cloud-init/user-data' is not absolute",
        4,
    ),
    "relative os destination": (
        "os:\n  additionalFiles:\n  - content: x\n    destination: etc/motd\n",
        "os.additionalFiles[0].destination: destination 'etc/motd' is not absolute",
        4,
    ),
    "media destination on a boot file": (
        "pxe:\n  additionalFiles:\n  - content: x\n    destination: /boot/grub2/grub.cfg\n",
        "pxe.additionalFiles[0].destination: media file destination /boot/grub2/grub.cfg is in /boot/grub2",
        4,
    ),
    "empty kernel argument": (
        'iso:\n  kernelCommandLine:\n    extraCommandLine:\n    - quiet\n    - ""\n',
        "iso.kernelCommandLine.extraCommandLine[1]: a kernel argument must not be empty",
        5,
    ),
    "url with full-os": (
        "pxe:\n  initramfsType: full-os\n  bootstrapBaseUrl: http://h/\n",
        "pxe.bootstrapBaseUrl: cannot specify either 'bootstrapBaseUrl' or 'bootstrapFileUrl'",
        3,
    ),
    "url with the full-os default": (
        "pxe:\n  bootstrapFileUrl: http://h/x.iso\n",
        "pxe.bootstrapFileUrl: a bootstrap URL needs initramfsType: bootstrap",
        2,
    ),
    "both urls": (
        "pxe:\n  initramfsType: bootstrap\n  bootstrapBaseUrl: http://h/\n  bootstrapFileUrl: http://h/x.iso\n",
        "pxe.bootstrapFileUrl: cannot specify both",
        4,
    ),
    "url scheme": (
        "pxe:\n  initramfsType: bootstrap\n  bootstrapBaseUrl: torrent://h/\n",
        "pxe.bootstrapBaseUrl:",
        3,
    ),
    "url under iso": ("iso:\n  bootstrapBaseUrl: http://h/\n", "iso.bootstrapBaseUrl: is not supported", 2),
    "script outside the config's folder": (
        "scripts:\n  postCustomization:\n  - path: ../evil.sh\n",
        "scripts.postCustomization[0].path: the script '../evil.sh' is not under the config's folder",
        3,
    ),
    "script with path and content": (
        "scripts:\n  finalizeCustomization:\n  - path: scripts/setup.sh\n    content: echo\n",
        "scripts.finalizeCustomization[0].content: path and content may not both have a value",
        4,
    ),
    "bad package name": (
        "os:\n  packages:\n    install:\n    - hello\n    - -oAPT::x=1\n",
        "os.packages.install[1]: invalid package name",
        5,
    ),
    "bad hostname": ("os:\n  hostname: my_host\n", "os.hostname: invalid hostname 'my_host'", 2),
    "bad service": (
        "os:\n  services:\n    enable:\n    - ../x\n",
        "os.services.enable[0]: invalid service name",
        4,
    ),
    "unknown preview feature": (
        "previewFeatures:\n- warp-drive\n",
        "previewFeatures[0]: unknown preview feature",
        2,
    ),
    "boolean expected": (
        'os:\n  packages:\n    updateExistingPackages: "yes"\n',
        "os.packages.updateExistingPackages: expected true or false",
        3,
    ),
    "duplicate key": (
        "iso:\n  initramfsType: bootstrap\nos: {}\niso:\n  initramfsType: full-os\n",
        "iso: duplicate key (first given on line 1)",
        4,
    ),
    "duplicate media destination": (
        "iso:\n  additionalFiles:\n  - content: a\n    destination: /a\n"
        "  - content: b\n    destination: /A\n",
        "iso.additionalFiles[1]: destination /A is given twice",
        5,
    ),
    "yaml syntax error": ("iso:\n  initramfsType: bootstrap\n   kdumpBootFiles: keep\n", "invalid YAML", 3),
    "unclosed flow": ("os:\n  packages: {install: [hello}\n", "invalid YAML", 2),
    "alias bomb": (
        'a: &a ["x","x","x","x","x","x","x","x","x"]\n'
        "b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
        "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
        "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n",
        "invalid YAML: YAML aliases (*a) are not supported",
        2,
    ),
    "merge key": ("os:\n  <<: {hostname: a}\n", "os: a key must be a string, found a YAML merge key", 2),
    "python tag": (
        "os:\n  hostname: !!python/object/apply:os.system [ls]\n",
        "os.hostname: expected a string",
        2,
    ),
    "two documents": ("iso: {}\n---\npxe: {}\n", "expected a single document", 2),
}


@pytest.mark.parametrize("case", list(INVALID))
def test_invalid_config_gives_one_clear_error(tmp_path: Path, case: str) -> None:
    text, expected, line = INVALID[case]
    path = write_config(tmp_path, text)
    with pytest.raises(UsageError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}, line {line}: "), message
    assert expected in message, message


def test_a_huge_config_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    path.write_text("# " + "x" * MAX_CONFIG_BYTES + "\niso: {}\n")
    with pytest.raises(UsageError, match="larger than"):
        load_config(path)


def test_deep_nesting_is_an_error_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text("os: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(UsageError, match=str(path)):
        load_config(path)


def test_cli_checks_the_config_before_opening_the_image(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path, "os:\n  hostname: a\n  users: []\n")
    code = main(["build", "--config", str(path), str(tmp_path / "no-such-image.qcow2"), "--format", "iso"])
    assert code == 2
    err = capsys.readouterr().err
    assert f"{path}, line 3: os.users: is not supported by liveos" in err


# -- the os: part applied to a tree (files, hostname, SELinux config: no sandbox needed) ------------
def test_os_files_hostname_and_selinux_land_in_the_tree(tmp_path: Path) -> None:
    folder = tmp_path / "cfg"
    folder.mkdir()
    config = load_config(
        write_config(
            folder,
            """\
            os:
              hostname: live-host
              selinux:
                mode: permissive
              additionalFiles:
              - source: files/89-ethernet.network
                destination: /etc/systemd/network/89-ethernet.network
              - source: files/89-ethernet.network
                destination: /usr/local/share/net
                permissions: 755
              - content: "hello\\n"
                destination: /etc/motd
            """,
        )
    )
    root = tmp_path / "root"
    (root / "etc/selinux").mkdir(parents=True)
    (root / "etc/selinux/config").write_text("# keep me\nSELINUX=enforcing\nSELINUXTYPE=default\n")
    (root / "etc/motd").symlink_to("/host/etc/shadow")  # replaced, never followed
    rootfs = RootFs(root)
    apply_os(rootfs, config)
    assert (root / "etc/hostname").read_text() == "live-host\n"
    network = root / "etc/systemd/network/89-ethernet.network"
    assert network.read_text() == NETWORK and network.stat().st_mode & 0o777 == 0o640  # the source's bits
    assert (root / "usr/local/share/net").stat().st_mode & 0o777 == 0o755
    motd = root / "etc/motd"
    assert not motd.is_symlink() and motd.read_text() == "hello\n" and motd.stat().st_mode & 0o777 == 0o644
    assert (
        root / "etc/selinux/config"
    ).read_text() == "# keep me\nSELINUX=permissive\nSELINUXTYPE=default\n"


def test_enforcing_needs_selinux_in_the_image(tmp_path: Path) -> None:
    config = load_config({"os": {"selinux": {"mode": "enforcing"}}})
    (tmp_path / "etc").mkdir()
    with pytest.raises(UsageError, match="the image has no SELinux"):
        apply_os(RootFs(tmp_path), config)
    apply_os(RootFs(tmp_path), load_config({"os": {"selinux": {"mode": "disabled"}}}))  # nothing to do
    assert not (tmp_path / "etc/selinux").exists()


def test_os_file_stays_in_the_tree(tmp_path: Path) -> None:
    """A destination through an absolute symlink resolves inside the root, as in a chroot."""
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    (root / "etc").symlink_to(outside)  # absolute: /…/outside, re-rooted inside the tree
    write_os_file(RootFs(root), OsFile("/etc/x", content=b"data"))
    assert not (outside / "x").exists()


def test_the_output_is_checked_and_its_folder_made_before_any_work(tmp_path: Path) -> None:
    for image_format, name in ((ImageFormat.PXE_DIR, "a/b/pxe"), (ImageFormat.ISO, "c/live.iso")):
        prepare_output(OutputTarget(image_format, tmp_path / name))
        assert (tmp_path / name).parent.is_dir() and not (tmp_path / name).exists()
    (tmp_path / "a/b/pxe").mkdir()
    (tmp_path / "a/b/pxe/old").write_text("x")
    with pytest.raises(UsageError, match=r"not empty|overwrite"):
        prepare_output(OutputTarget(ImageFormat.PXE_DIR, tmp_path / "a/b/pxe"))
    prepare_output(OutputTarget(ImageFormat.PXE_DIR, tmp_path / "a/b/pxe"), overwrite=True)
    with pytest.raises(UsageError, match="is a directory"):
        prepare_output(OutputTarget(ImageFormat.ISO, tmp_path / "a"))
