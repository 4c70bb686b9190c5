"""Benchmark: liveos' newc writer vs GNU cpio and bsdtar, uncompressed and zstd-3; reader vs libarchive-c.

Method as in perf-baselines.md: whole processes (fork->reap wall, user+sys CPU, peak RSS from
``wait4``), candidates interleaved, >= 3 rounds, medians; page cache warm, ``sync`` before each
run, outputs on the same disk, no fsync by anyone (liveos gets an open file, like ``> file``).
Then once each on a tree twice as large: a parent directory with two read-only bind mounts of
the corpus (2x entries, 2x data; the page cache holds one copy, like the 1x runs).

Run as root from the repo root: ``python3 benchmarks/bench_cpio.py [--tree DIR] [--rounds 3]``.
Without ``--tree`` a corpus (cp -a of parts of /usr, >= 1.5 GB, >= 30k files, plus device nodes,
fifo, hard links, long/odd names) is built once under /var/tmp and reused.
Prints markdown tables, writes ``benchmarks/results/cpio.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks._timing import (  # noqa: E402
    Command,
    Series,
    interleaved,
    markdown_table,
    run_once,
    write_results,
)

CACHE = Path("/var/tmp/liveos-bench-cpio")
SKIP_USR_LIB = {"google-cloud-sdk", "jvm", "debug"}


def build_corpus(base: Path) -> Path:
    """``cp -a`` of /usr/{bin,sbin,include,libexec,share,lib/*} plus edge cases; cached."""
    tree = base / "tree"
    if (tree / ".complete").exists():
        return tree
    partial = base / "tree.partial"
    if not (base / "cp.done").exists():
        subprocess.run(["rm", "-rf", str(partial)], check=True)
        (partial / "usr" / "lib").mkdir(parents=True)
        subprocess.run(
            [
                "cp",
                "-a",
                *(f"/usr/{d}" for d in ("bin", "sbin", "include", "libexec", "share")),
                str(partial / "usr"),
            ],
            check=True,
        )
        libs = [str(p) for p in sorted(Path("/usr/lib").iterdir()) if p.name not in SKIP_USR_LIB]
        subprocess.run(["cp", "-a", *libs, str(partial / "usr" / "lib")], check=True)
        (base / "cp.done").write_text("done\n")
    skeleton(partial)
    partial.rename(tree)
    (tree / ".complete").touch()
    return tree


def skeleton(root: Path) -> None:
    """Root skeleton and the edge cases a real OS tree has."""
    for link, target in (("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib")):
        if not (root / link).is_symlink():
            os.symlink(target, root / link)
    for d in ("proc", "sys", "run", "tmp", "var/tmp", "dev", "edge/hard", "edge/names"):
        (root / d).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "tmp", 0o1777)
    for name, kind, major, minor in (("null", "c", 1, 3), ("zero", "c", 1, 5), ("console", "c", 5, 1)):
        if not (root / "dev" / name).exists():
            subprocess.run(["mknod", str(root / "dev" / name), kind, str(major), str(minor)], check=True)
    if not (root / "dev" / "loop0").exists():
        subprocess.run(["mknod", str(root / "dev" / "loop0"), "b", "7", "0"], check=True)
    if not (root / "edge" / "fifo").exists():
        os.mkfifo(root / "edge" / "fifo")
    hard = root / "edge" / "hard"
    for i in range(100):
        src = hard / f"file{i:03d}"
        if not src.exists():
            src.write_bytes(os.urandom(1000 + 97 * i))
            os.link(src, hard / f"link{i:03d}")
            os.link(src, root / "edge" / f"outside{i:03d}")
    names = root / "edge" / "names"
    for i in range(20):
        (names / (f"{i:02d}" + "x" * 250)).write_bytes(b"long\n")
    (names / "with space").write_bytes(b"s\n")
    (names / "new\nline").write_bytes(b"n\n")
    (names / "ünïcødé").write_bytes(b"u\n")
    with open(root / "edge" / "sparse", "wb") as fp:
        fp.truncate(64 << 20)


def tree_facts(tree: Path) -> dict[str, int]:
    entries = files = size = 0
    for dirpath, dirnames, filenames in os.walk(tree):
        entries += len(dirnames) + len(filenames)
        for name in filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if not os.path.islink(os.path.join(dirpath, name)):
                files += 1
                size += st.st_size
    return {"entries": entries, "regular_and_special_files": files, "bytes": size}


def liveos_cmd(tree: Path, out: Path, compression: str, threads: int) -> list[str]:
    code = (
        f"import sys; from pathlib import Path; sys.path.insert(0, {str(REPO)!r});"
        "from liveos.cpio import write_newc; from liveos.settings import Compression;"
        f"fp = open({str(out)!r}, 'wb');"
        f"write_newc(Path({str(tree)!r}), fp, compression=Compression({compression!r}),"
        f" level=3, threads={threads});"
        "fp.close()"
    )
    return [sys.executable, "-c", code]


def writer_candidates(tree: Path, out: Path, threads: int) -> tuple[dict[str, Command], dict[str, Command]]:
    t, o = shlex.quote(str(tree)), shlex.quote(str(out))
    plain = {
        "liveos write_newc (none)": liveos_cmd(tree, out, "none", threads),
        "GNU cpio (find -print0 | cpio -o -H newc)": (
            f"cd {t} && find . -print0 | cpio -o -H newc --null --quiet > {o}"
        ),
        "bsdtar --format newc": f"bsdtar --format newc -cf {o} -C {t} .",
    }
    zstd = {
        "liveos write_newc (zstd-3, in-process)": liveos_cmd(tree, out, "zstd", threads),
        "GNU cpio | zstd -T0 -3": (
            f"cd {t} && find . -print0 | cpio -o -H newc --null --quiet | zstd -q -T0 -3 > {o}"
        ),
        f"bsdtar --zstd (level 3, threads={threads})": (
            f"bsdtar --format newc --zstd --options zstd:compression-level=3,zstd:threads={threads} "
            f"-cf {o} -C {t} ."
        ),
    }
    return plain, zstd


def reader_candidates(archive: Path) -> dict[str, Command]:
    own = (
        f"import sys; sys.path.insert(0, {str(REPO)!r});"
        "from liveos.cpio import iter_entries;"
        "import os; fd = os.open('/dev/null', os.O_WRONLY); n = b = 0\n"
        f"for m in iter_entries({str(archive)!r}):\n"
        "    n += 1; b += m.copy_to(fd)\n"
        "print(n, b)"
    )
    la = (
        "import libarchive\n"
        "n = b = 0\n"
        f"with libarchive.file_reader({str(archive)!r}) as arc:\n"
        "    for e in arc:\n"
        "        n += 1\n"
        "        for blk in e.get_blocks(): b += len(blk)\n"
        "print(n, b)"
    )
    return {
        "liveos iter_entries + copy_to()": [sys.executable, "-c", own],
        "libarchive-c file_reader": [sys.executable, "-c", la],
    }


@contextlib.contextmanager
def doubled(tree: Path, base: Path) -> Iterator[Path]:
    """A directory holding two read-only bind mounts of ``tree``: twice the entries and data."""
    parent = base / "double"
    mounts = [parent / "a", parent / "b"]
    for m in mounts:
        m.mkdir(parents=True, exist_ok=True)
    done: list[Path] = []
    try:
        for m in mounts:
            subprocess.run(["mount", "--bind", "-o", "ro", str(tree), str(m)], check=True)
            done.append(m)
        yield parent
    finally:
        for m in reversed(done):
            subprocess.run(["umount", str(m)], check=False)


def _prepare(out: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        out.unlink()
    os.sync()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", type=Path, help="tree to archive (default: build a cached corpus)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", type=Path, default=CACHE, help="corpus cache and output directory")
    ap.add_argument("--no-double", action="store_true", help="skip the 2x tree runs")
    ap.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "cpio.json")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    tree = args.tree.resolve() if args.tree else build_corpus(args.work)
    threads = os.cpu_count() or 1
    out = args.work / "out.cpio"
    facts = tree_facts(tree)
    mb = facts["bytes"] / 1e6
    subprocess.run(
        f"tar cf - -C {shlex.quote(str(tree))} . | cat > /dev/null", shell=True, check=True
    )  # warm
    sizes: dict[str, int] = {}

    def record(name: str, _sample: object) -> None:
        sizes[name] = out.stat().st_size

    result: dict[str, object] = {
        "tree": str(tree),
        "facts": facts,
        "threads": threads,
        "rounds": args.rounds,
    }
    report = [f"Tree {tree}: {facts['entries']} entries, {facts['bytes'] / 1e9:.2f} GB; {threads} CPUs\n"]
    plain, zstd = writer_candidates(tree, out, threads)
    for title, cands in (("uncompressed newc to a file", plain), ("zstd-3 newc, all cores", zstd)):
        series = interleaved(
            cands, rounds=args.rounds, before_each=lambda _n: _prepare(out), after_each=record
        )
        ref = next(iter(cands))
        report.append(f"### {title}\n\n" + markdown_table(list(series.values()), reference=ref, mb_input=mb))
        report.append("output bytes: " + ", ".join(f"{n}: {sizes[n]}" for n in cands) + "\n")
        result[title] = [s.summary() | {"output_bytes": sizes[s.name]} for s in series.values()]
        print(report[-2], report[-1], sep="\n", flush=True)

    # Reader: list + read all data of the zstd archive liveos wrote.
    _prepare(out)
    run_once(liveos_cmd(tree, out, "zstd", threads))
    rseries = interleaved(reader_candidates(out), rounds=args.rounds)
    report.append(
        "### reading the zstd archive (list + read all data)\n\n"
        + markdown_table(list(rseries.values()), reference="liveos iter_entries + copy_to()", mb_input=mb)
    )
    result["reader"] = [s.summary() for s in rseries.values()]
    print(report[-1], flush=True)

    if not args.no_double:
        with doubled(tree, args.work) as big:
            plain2, zstd2 = writer_candidates(big, out, threads)
            series2: list[Series] = []
            for name, cmd in {**plain2, **zstd2}.items():
                _prepare(out)
                s = Series(name, [run_once(cmd)])
                record(name, None)
                s.extra["output_bytes"] = sizes[name]
                series2.append(s)
            table = markdown_table(series2[:3], reference=series2[0].name, mb_input=2 * mb)
            table += "\n\n" + markdown_table(series2[3:], reference=series2[3].name, mb_input=2 * mb)
            report.append("### 2x tree (two bind mounts of the corpus), one run each\n\n" + table)
            result["2x tree"] = [s.summary() for s in series2]
            print(report[-1], flush=True)
    with contextlib.suppress(FileNotFoundError):
        out.unlink()
    result["markdown"] = "\n\n".join(report)
    result["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    write_results(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
