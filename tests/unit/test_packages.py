"""The package manager knowledge (liveos/packages.py) and the validation RootFs does before it runs
anything from an image: host names, unit names, script interpreters."""

from __future__ import annotations

import pytest

from liveos.errors import ImageError, UsageError
from liveos.packages import (
    APT_ENV,
    Operation,
    PackageManager,
    check_names,
    detect,
    transaction,
)
from liveos.rootfs import check_hostname, check_units, script_interpreter


def argvs(manager: PackageManager, operation: Operation, names: list[str] | None) -> list[list[str]]:
    return [list(c.argv) for c in transaction(manager, operation, names).commands]


@pytest.mark.parametrize(
    ("present", "expected"),
    [
        ({"/usr/bin/apt-get", "/usr/bin/dnf"}, PackageManager.APT),
        ({"/usr/bin/tdnf", "/usr/bin/dnf"}, PackageManager.TDNF),  # Azure Linux may carry dnf too
        ({"/usr/bin/dnf"}, PackageManager.DNF),
        ({"/bin/apt-get"}, PackageManager.APT),  # not merged-/usr
        ({"/usr/bin/zypper"}, PackageManager.ZYPPER),
    ],
)
def test_the_image_s_own_package_manager_is_found(present: set[str], expected: PackageManager) -> None:
    assert detect(present.__contains__) is expected


def test_no_package_manager_names_what_was_looked_for() -> None:
    with pytest.raises(ImageError, match="no package manager") as info:
        detect(lambda path: False)
    for program in ("/usr/bin/apt-get", "/usr/bin/tdnf", "/usr/bin/dnf", "/usr/bin/zypper"):
        assert program in str(info.value)


def test_apt_install_refreshes_the_index_then_installs_without_recommends() -> None:
    t = transaction(PackageManager.APT, Operation.INSTALL, ["hello", "jq=1.6-2.1"])
    update, install = t.commands
    assert update.argv[0] == "apt-get" and update.argv[-1] == "update" and update.network
    assert install.network and install.argv[-2:] == ("hello", "jq=1.6-2.1")
    assert {"install", "-y", "--no-install-recommends", "--no-install-suggests"} <= set(install.argv)
    assert "Dpkg::Options::=--force-confold" in install.argv  # the image's changed config files stay
    assert [c.argv[-1] for c in t.cleanup] == ["clean"] and not t.cleanup[0].network
    assert t.emptied == ("/var/lib/apt/lists",) and t.forbid_service_starts
    assert t.env == APT_ENV and t.env["DEBIAN_FRONTEND"] == "noninteractive"


def test_apt_remove_and_update() -> None:
    (remove,) = transaction(PackageManager.APT, Operation.REMOVE, ["hello"]).commands
    assert remove.argv[-3:] == ("remove", "-y", "hello") and not remove.network  # dpkg's database only
    everything = argvs(PackageManager.APT, Operation.UPDATE, None)
    assert (
        everything[0][-1] == "update" and "upgrade" in everything[1] and "--with-new-pkgs" in everything[1]
    )
    named = argvs(PackageManager.APT, Operation.UPDATE, ["openssl"])
    assert "--only-upgrade" in named[1] and named[1][-1] == "openssl"  # never installs it


@pytest.mark.parametrize("manager", [PackageManager.TDNF, PackageManager.DNF])
def test_tdnf_and_dnf_follow_image_customizer(manager: PackageManager) -> None:
    program = manager.value
    assert argvs(manager, Operation.INSTALL, ["jq"]) == [
        [program, "makecache"],
        [program, "install", "--assumeyes", "jq"],
    ]
    assert argvs(manager, Operation.REMOVE, ["jq"]) == [
        [program, "remove", "--assumeyes", "--disablerepo=*", "jq"]
    ]
    assert argvs(manager, Operation.UPDATE, None)[1] == [program, "update", "--assumeyes"]
    t = transaction(manager, Operation.INSTALL, ["jq"])
    assert [c.argv for c in t.cleanup] == [(program, "clean", "all")]
    assert not t.forbid_service_starts and t.emptied == ()
    assert [c.network for c in t.commands] == [True, True]
    assert not transaction(manager, Operation.REMOVE, ["jq"]).commands[0].network


def test_zypper_is_non_interactive() -> None:
    install = argvs(PackageManager.ZYPPER, Operation.INSTALL, ["jq"])
    assert install == [
        ["zypper", "--non-interactive", "refresh"],
        ["zypper", "--non-interactive", "install", "--no-recommends", "jq"],
    ]


@pytest.mark.parametrize(
    "names",
    [[], [""], ["-oAPT::Get::AllowUnauthenticated=1"], ["--reinstall"], ["two words"], ["a\nb"], [3]],
)
def test_bad_package_names_are_refused(names: list[object]) -> None:
    with pytest.raises(UsageError):
        check_names(names, operation=Operation.INSTALL)  # type: ignore[arg-type]


def test_a_string_is_not_a_list_of_packages() -> None:
    with pytest.raises(UsageError, match="list of names"):
        transaction(PackageManager.APT, Operation.INSTALL, "hello")


def test_only_update_may_name_no_package() -> None:
    with pytest.raises(UsageError, match="needs package names"):
        transaction(PackageManager.APT, Operation.INSTALL, None)
    with pytest.raises(UsageError, match="at least one"):
        transaction(PackageManager.APT, Operation.UPDATE, [])


def test_package_names_with_versions_and_globs_pass() -> None:
    names = ["hello", "kernel-6.6.57.1-6.azl3", "libc6:amd64", "hello/bookworm", "python3-*", "g++"]
    assert check_names(names, operation=Operation.INSTALL) == tuple(names)


@pytest.mark.parametrize(
    "name", ["live", "live-01", "a", "node1.example.com", "x" * 63, ".".join(["a" * 63] * 3)]
)
def test_valid_hostnames(name: str) -> None:
    assert check_hostname(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "-live", "live-", "live_01", "li ve", "a..b", "x" * 64, ".".join(["a" * 63] * 4), "live\n", "é"],
)
def test_invalid_hostnames(name: str) -> None:
    with pytest.raises(UsageError):
        check_hostname(name)


def test_unit_names_default_to_services() -> None:
    assert check_units(["sshd", "getty@tty1", "fstrim.timer", "dbus.socket"]) == (
        "sshd.service",
        "getty@tty1.service",
        "fstrim.timer",
        "dbus.socket",
    )


@pytest.mark.parametrize("names", [[], ["../etc/passwd"], ["--now"], ["a b"], "sshd"])
def test_bad_unit_names_are_refused(names: object) -> None:
    with pytest.raises(UsageError):
        check_units(names)  # type: ignore[arg-type]


def test_the_interpreter_comes_from_the_caller_then_the_shebang_then_sh() -> None:
    assert script_interpreter(b"#!/bin/bash\necho", "python3") == ["python3"]
    assert script_interpreter(b"#!/bin/bash\necho") == ["/bin/bash"]
    assert script_interpreter(b"#! /usr/bin/env python3 -u\n") == [
        "/usr/bin/env",
        "python3 -u",
    ]  # as the kernel
    assert script_interpreter(b"echo hi\n") == ["/bin/sh"]  # Image Customizer's default
    assert script_interpreter(b"#!\n") == ["/bin/sh"]
    with pytest.raises(UsageError):
        script_interpreter(b"", " ")
