"""What the benchmark scripts in bench/ share: the star world they measure
in (a server host, client hosts linked to it, dnsmasq, a big file), the
command line every bench takes, CPU accounting, facts about the machine and
the build measured, the end of their section of docs/BENCHMARKS.md, and
writing it.

No bench imports another. The world and its peers come from the test
suite's modules (tests/integration/world.py and peers.py), which
bench/lib.sh puts on PYTHONPATH beside bench/ itself: one copy of each
peer serves the tests and the benches."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

import world as w  # tests/integration/world.py, on PYTHONPATH (bench/lib.sh)

ROOT = Path(os.environ.get("TUNNELS_BENCH_ROOT") or Path(__file__).resolve().parent.parent)
DNSMASQ = "/usr/sbin/dnsmasq"
CLK_TCK = os.sysconf("SC_CLK_TCK")
GIB = 1 << 30

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


def command_line(name: str) -> str:
    """How the bench was run (run-NAME-bench.sh passes its command line)."""
    return os.environ.get("TUNNELS_BENCH_COMMAND") or f"bench/run-{name}-bench.sh"


def closing(info: dict[str, str], versions: str, name: str, end: str,
            load: str = "") -> list[str]:
    """The last lines of a report: the machine, `versions` (what was
    measured beside tunnels, ending in its own punctuation), the build,
    `load` if any, the date; then how it was produced."""
    return ["",
            f"Machine: {info['nproc']} cores ({info['cpu']}), Linux {info['kernel']}. "
            f"{versions} tunnels at {info['commit']}, Release build. {load}"
            f"Date: {info['date']}.",
            "",
            *produced_by(command_line(name), end)]


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


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def rotate(items: tuple[str, ...], run: int) -> list[str]:
    """`items` started at position `run`: each run measures every contender
    once, the order rotating from run to run."""
    k = run % len(items)
    return list(items[k:] + items[:k])


def mib_s(bps: float) -> str:
    return f"{bps / (1 << 20):,.0f} MiB/s"


def world_cpu() -> dict[str, float]:
    """CPU seconds so far of every process of the world (its own PID
    namespace: /proc shows nothing else), summed by program name, plus
    "client": the reaped children of this script (curl, wrk)."""
    out: dict[str, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1:text.rindex(")")]
        fields = text.rsplit(")", 1)[1].split()
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / CLK_TCK
    t = os.times()
    out["client"] = t.children_user + t.children_system
    return out


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0) > 0}


def machine(**facts: str) -> dict[str, str]:
    """What every report says about the machine and the build, plus `facts`."""
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu_model(),
        "kernel": platform.release(),
        **facts,
        "commit": tunnels_commit(ROOT),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


def arguments(doc: str, name: str, runs: int, seconds: float,
              seconds_help: str) -> argparse.ArgumentParser:
    """The options every measuring bench takes; `name` is its section of
    docs/BENCHMARKS.md (engine, dns, ssh)."""
    p = argparse.ArgumentParser(description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tunnels", type=Path, default=ROOT / "build-bench/launcher/tunnels",
                   help=f"the tunnels binary (run-{name}-bench.sh passes build-bench's)")
    p.add_argument("--runs", type=int, default=runs,
                   help=f"runs per contender and phase (default {runs})")
    p.add_argument("--seconds", type=float, default=seconds,
                   help=f"{seconds_help} per run (default {seconds:g})")
    p.add_argument("--update-doc", action="store_true",
                   help=f"write the results into docs/BENCHMARKS.md ({name}-bench section)")
    p.add_argument("--doc", type=Path, default=ROOT / "docs/BENCHMARKS.md",
                   help="the file --update-doc writes (default docs/BENCHMARKS.md)")
    return p


def enter(script: str, runner: str, tunnels: Path, tools: Iterable[str]) -> Path | None:
    """The bench's private directory in the world, or None (after saying
    why) when it runs outside a world or lacks a tool or the binary."""
    if not w.in_world():
        log(f"{script}: run me through bench/{runner} (I need a private world)")
        return None
    for tool in tools:
        if not (Path(tool).exists() or subprocess.run(["sh", "-c", f"command -v {tool}"],
                                                       capture_output=True).returncode == 0):
            log(f"{script}: {tool} not found")
            return None
    if not os.access(tunnels, os.X_OK):
        log(f"{script}: {tunnels} is not an executable")
        return None
    tmp = Path(f"/run/tunnels-world/tmp/{Path(script).stem.replace('_', '-')}")
    tmp.mkdir(parents=True, exist_ok=True)
    return tmp


@contextlib.contextmanager
def bench_world(tmp: Path, keep_logs: Path | None = None) -> Iterator[w.World]:
    """A World in `tmp` for the `with` block: on an error, the tail of every
    process's log is printed; at the end, every log is copied to
    `keep_logs` (--keep-logs) if given, and the world is closed."""
    world = w.World(tmp)
    try:
        yield world
    except BaseException:
        log(world.logs())
        raise
    finally:
        if keep_logs:
            keep_logs.mkdir(parents=True, exist_ok=True)
            for proc in world.procs:
                (keep_logs / proc.log_path.name).write_text(proc.output())
        world.close()


def publish(script: str, section: str, args: argparse.Namespace, begin: str, end: str) -> None:
    """Prints the report; with --update-doc, also writes it into its section."""
    print(section)
    if args.update_doc:
        update_doc(args.doc, section, begin, end)
        log(f"{script}: wrote the {begin[5:].split(':')[0]} section of {args.doc}")


def star(world: w.World, srv_ips: Iterable[str],
         clients: dict[str, int]) -> tuple[w.Host, dict[str, w.Host]]:
    """Host "srv" with `srv_ips` on its lo, and one host per client, linked
    to srv over its own veth (10.1.OCTET.2 to 10.1.OCTET.1) and routed to
    every srv address. Every namespace gets the same ephemeral port range,
    enough for wrk's stream of short connections."""
    srv_ips = list(srv_ips)
    srv = world.host("srv")
    for address in srv_ips:
        srv.run(["ip", "addr", "add", f"{address}/32", "dev", "lo"])
    hosts: dict[str, w.Host] = {}
    for name, octet in clients.items():
        h = world.host(name)
        world.link(h, srv, f"10.1.{octet}.2/24", f"10.1.{octet}.1/24")
        for address in srv_ips:
            h.run(["ip", "route", "add", f"{address}/32", "via", f"10.1.{octet}.1"])
        hosts[name] = h
    for h in [srv, *hosts.values()]:
        h.run(["sysctl", "-q", "-w", "net.ipv4.ip_local_port_range=1024 65535"])
    return srv, hosts


def star_dnsmasq(srv: w.Host, tmp: Path, address: str, answer: str,
                 extra: Iterable[str] = ()) -> w.Proc:
    """dnsmasq on address:53 answering every *.test name with `answer`, as
    srv's resolver; returns once it answers."""
    proc = srv.spawn(
        [DNSMASQ, "--keep-in-foreground", "--user=root", "--group=",
         f"--pid-file={tmp}/dnsmasq.pid", "--no-resolv", "--no-hosts", "--no-poll",
         "--log-facility=-", f"--listen-address={address}", "--bind-interfaces",
         "--port=53", f"--address=/test/{answer}", "--local=/test/", "--cache-size=1000",
         *extra],
        name="dnsmasq", line_buffered=False)
    w.wait_until(lambda: w.dig(srv, address, "probe.bench.test", timeout=1).addresses
                 == [answer], timeout=15, what="dnsmasq to answer")
    srv.use_nameserver(address)
    return proc


def write_random(path: Path, size: int) -> None:
    """`size` random bytes (in 16 MiB chunks, so memory stays small)."""
    log(f"writing a {size / GIB:g} GiB file to the world's tmpfs")
    with open("/dev/urandom", "rb") as src, open(path, "wb") as dst:
        left = size
        while left:
            chunk = src.read(min(left, 16 << 20))
            dst.write(chunk)
            left -= len(chunk)
