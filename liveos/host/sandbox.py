"""The sandbox every program from an image runs in (the image's dracut, its package manager).

Images are untrusted: their programs run as root *inside* namespaces, never with the host in
reach. Two well-kept tools from Debian build it (measured and justified in docs/design.md):

* ``unshare --user`` (util-linux) makes a user namespace; liveos, root outside, writes an identity
  map (``0 0 4294967295``) so the image's files keep their real owners and root in the sandbox
  may read, write and chown them -- but every capability it holds is a capability *in that
  namespace*: no module loading, no raw devices (``mknod`` is refused), no host clock, no
  mounts it did not make. A second exec gives the launcher root's capabilities there, which it
  uses once: ``user.max_user_namespaces = 0``, so nothing inside can nest a user namespace to
  regain privileges.
* ``bwrap`` (bubblewrap, what flatpak relies on) then builds the rest: new mount, PID, IPC, UTS
  (and cgroup) namespaces, a network namespace with only loopback unless the caller asks for
  the network, the image tree as ``/`` (``nosuid,nodev``: set-uid bits, file capabilities and
  device nodes of the image mean nothing), a fresh ``/proc`` of the new PID namespace with
  ``/proc/sys`` (and the other kernel knobs under ``/proc``) read-only, a minimal ``/dev``
  (null, zero, full, random, urandom, tty, pts) instead of the host's devtmpfs, no ``/sys``,
  tmpfs on ``/tmp`` (mode 1777) and ``/run``, a clean environment and umask 022 (the caller's
  must not leak into what dracut writes: reproducible initrds), a new session (no terminal
  injection), and the capability set reduced to :data:`TOOL_CAPS` (no ``CAP_SYS_ADMIN``: the
  sandbox cannot unmount or remount what hides the host). With the network, ``RootFs`` binds
  the host's ``/etc/resolv.conf`` read-only where the image reads it (DNS, nothing more).

Process lifetime: bwrap's ``--die-with-parent`` and the PID namespace mean that when the
launcher dies -- liveos killed it, or liveos itself died, even by SIGKILL -- every process in
the sandbox is killed by the kernel. Nothing started from an image outlives the build.
"""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from liveos.errors import HostError, ImageError, InternalError
from liveos.host.privilege import require_root
from liveos.run import Argument, run, which

#: What root inside the sandbox may do, beyond being the owner of every file: read, write and
#: chown files of any owner (dracut copies, package managers install), set-uid/-gid (apt drops to
#: _apt), set file capabilities (packages like iputils), signal its own processes.
TOOL_CAPS = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
)
#: Kernel knobs under /proc that a root user could use against the host: bound read-only.
PROC_COVERS = ("/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus", "/proc/fs")
#: Where the sandbox mounts its own filesystems over the image tree.
MOUNT_POINTS = ("/proc", "/dev", "/tmp", "/run")
#: Identity map: image file owners stay who they are (see the module docstring).
ID_MAP = "0 0 4294967295\n"
#: The launcher: wait on stdin for the map, umask 022, take /dev/null as stdin, exec again (to
#: hold root's capabilities in the namespace), forbid nested user namespaces, exec bwrap.
LAUNCHER = (
    "read _ && umask 022 && exec </dev/null && "
    'exec /bin/sh -c \'echo 0 > /proc/sys/user/max_user_namespaces && exec "$@"\' sh "$@"'
)
#: How long the launcher may take to enter its user namespace.
NAMESPACE_TIMEOUT = 10.0
#: The sandbox's own host name (its UTS namespace starts with a copy of the host's).
HOSTNAME = "liveos-sandbox"
#: The environment programs from the image see (nothing of the host's leaks in).
BASE_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root", "TERM": "dumb"}


#: Names how programs run in the sandbox (what they see, what liveos adds to their output);
#: bumped when that changes (cached initrds are keyed by it).
SANDBOX_FORMAT = "liveos-sandbox-2"


@dataclass(frozen=True)
class Bind:
    """A host directory visible in the sandbox (liveos' own scratch space, never the image's)."""

    host: Path
    inside: str  #: absolute path in the sandbox
    writable: bool = False


@dataclass(frozen=True)
class Sandbox:
    """Where and how a program from an image runs (see the module docstring)."""

    root: Path  #: the image tree, mounted as ``/``
    network: bool = False  #: share nothing but loopback unless True
    binds: tuple[Bind, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    caps: tuple[str, ...] = TOOL_CAPS
    cwd: str = "/"
    read_only: bool = False  #: the image tree is read-only (its /tmp, /run and the binds are not)

    def check_root(self) -> None:
        """The image's own mount points for the sandbox must be real directories (or absent):
        a hostile image may make ``/proc`` a link to a host path. bwrap would refuse it too; this
        says why, naming the path."""
        for name in MOUNT_POINTS:
            try:
                st = os.lstat(self.root / name.lstrip("/"))
            except FileNotFoundError:
                continue
            if not stat.S_ISDIR(st.st_mode):
                what = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a directory"
                raise ImageError(
                    f"the image's {name} is {what}; refusing to run the image's programs there",
                    path=self.root / name.lstrip("/"),
                    hint=f"{name} must be a directory in an OS tree; fix the image",
                )

    def bwrap_argv(self, command: Sequence[Argument]) -> list[str]:
        """The bwrap command line that runs ``command`` inside this sandbox."""
        argv = [which("bwrap"), "--bind", str(self.root), "/", "--proc", "/proc"]
        for cover in PROC_COVERS:
            if os.path.exists(cover):  # the source is the host's: same knobs, read-only
                argv += ["--ro-bind", cover, cover]
        # /tmp is sticky and world-writable as on a real system: apt's methods write there as _apt
        argv += ["--dev", "/dev", "--perms", "1777", "--tmpfs", "/tmp", "--tmpfs", "/run"]
        for bind in self.binds:
            if not bind.inside.startswith("/") or ".." in bind.inside.split("/"):
                raise InternalError(f"sandbox bind target {bind.inside!r} is not a plain absolute path")
            argv += ["--bind" if bind.writable else "--ro-bind", str(bind.host), bind.inside]
        if self.read_only:  # after every mount point inside it exists
            argv += ["--remount-ro", "/"]
        argv += ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--hostname", HOSTNAME]
        argv.append("--unshare-cgroup-try")
        if not self.network:
            argv.append("--unshare-net")
        argv += ["--die-with-parent", "--new-session", "--clearenv", "--chdir", self.cwd]
        for name, value in {**BASE_ENV, **self.env}.items():
            argv += ["--setenv", name, value]
        argv += ["--cap-drop", "ALL"]
        for cap in self.caps:
            argv += ["--cap-add", cap]
        return [*argv, "--", *(os.fspath(a) for a in command)]

    def argv(self, command: Sequence[Argument]) -> list[str]:
        """The full command line: the user-namespace launcher, then bwrap, then ``command``."""
        return [which("unshare"), "--user", "--", "/bin/sh", "-c", LAUNCHER, "sh", *self.bwrap_argv(command)]


def map_identity(process: subprocess.Popen[bytes]) -> None:
    """Give the launcher's new user namespace the identity map, then let it continue."""
    own = os.readlink("/proc/self/ns/user")
    deadline = time.monotonic() + NAMESPACE_TIMEOUT
    while True:
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{process.pid}/ns/user") != own:
                break
        if process.poll() is not None or time.monotonic() > deadline:
            raise HostError(
                "the sandbox launcher did not enter a user namespace",
                hint="the kernel must allow user namespaces (user.max_user_namespaces > 0)",
            )
        time.sleep(0.002)
    for name in ("uid_map", "gid_map"):
        with open(f"/proc/{process.pid}/{name}", "w") as f:
            f.write(ID_MAP)
    assert process.stdin is not None
    process.stdin.write(b"go\n")
    process.stdin.flush()


def run_sandboxed(
    sandbox: Sandbox,
    command: Sequence[Argument],
    *,
    step: str,
    hint: str | None = None,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``command`` (a program of the image) in ``sandbox``; see :func:`liveos.run.run`."""
    require_root(f"{step} (the sandbox maps the image's users)")
    sandbox.check_root()
    return run(sandbox.argv(command), step=step, hint=hint, timeout=timeout, started=map_identity)
