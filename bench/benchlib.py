"""What the benchmark scripts in bench/ share: facts about the machine and
the build measured, the end of their section of docs/BENCHMARKS.md, and
writing it."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

DOC_INTRO = """# Benchmarks

Measured numbers for the parts of tunnels that have performance goals. Each section is written by the benchmark named in it, between its markers; rerun the command shown to refresh it, and keep the markers so that other sections can be added beside it.
"""


def update_doc(path: Path, section: str, begin: str, end: str) -> None:
    """Replace the part of `path` from `begin` to `end` (markers included)
    with `section`, or append `section` when the markers are missing; keep
    every other byte. A missing file starts with a short introduction. The
    file is replaced in one rename, so a reader never sees half of it."""
    text = path.read_text() if path.exists() else DOC_INTRO
    start, stop = text.find(begin), text.find(end)
    if start != -1 and stop != -1 and stop > start:
        text = text[:start] + section.rstrip("\n") + text[stop + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    if not text.endswith("\n"):
        text += "\n"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".BENCHMARKS.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def produced_by(command: str, end: str) -> list[str]:
    """The last lines of a section: the command that produced it, then the
    section's end marker."""
    return ["Produced by (as root, from the top of the tree):", "", "```sh", command, "```", end]


def first_line(cmd: list[str]) -> str:
    """The first line `cmd` prints (stdout, then stderr), or "unknown"."""
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        text = (out.stdout + out.stderr).strip().splitlines()
        return text[0] if text else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def tunnels_commit(root: Path) -> str:
    """The commit the measured tunnels was built from, and whether its
    sources differed from it (other files do not change the binary)."""
    commit = first_line(["git", "-C", str(root), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no",
                            "--", "proxies", "launcher", "netns", "resolver", "config"],
                           capture_output=True, text=True).stdout.strip()
    return commit + (" (with uncommitted changes in the tree)" if dirty else "")


def dpkg_version(package: str) -> str:
    out = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", package], capture_output=True,
                         text=True)
    return out.stdout.strip() or "unknown"
