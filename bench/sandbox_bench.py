#!/usr/bin/python3
"""The cost of `tunnels run`: start-up of `tunnels run -- true` beside
`unshare --net --mount true`, and a download from inside the sandbox through
a SOCKS5 rule beside the same download made under `tunnels system`.

Runs inside a private world (bench/run-sandbox-bench.sh builds it), the
tests' sites.TwoHosts: host "outer" is the caller's side, host "srv" runs
dnsmasq, nginx (a 512 MiB file) and dante, joined by a veth link.
Contenders alternate run by run, so that the machine's drift affects both
alike; the table reports medians."""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import world as w  # tests/integration/world.py, on PYTHONPATH (bench/lib.sh)
from benchlib import ROOT, bench_world, cpu_model, tunnels_commit, update_doc
from peers import Dante
from sites import SYSTEM_CONFIG, TwoHosts

CONFIG = SYSTEM_CONFIG + """\
proxies:
  dante: {type: socks5, address: 10.0.0.1:1080}
rules:
  .via-dante.test: dante
"""
SIZE_MIB = 512


def timed(host: w.Host, argv: list[str]) -> float:
    start = time.perf_counter()
    host.run(argv, timeout=60)
    return (time.perf_counter() - start) * 1000


def speed(host: w.Host, argv: list[str]) -> float:
    out = host.run(argv + ["curl", "-sS", "--fail", "-o", "/dev/null", "-w", "%{speed_download}",
                           "http://big.via-dante.test/big.bin"], timeout=300).stdout
    return float(out.strip().splitlines()[-1]) * 8 / 1e9  # Gbit/s


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tunnels", required=True)
    parser.add_argument("--starts", type=int, default=21)
    parser.add_argument("--downloads", type=int, default=5)
    parser.add_argument("--update-doc", action="store_true")
    args = parser.parse_args()
    tunnels = args.tunnels

    tmp = Path(tempfile.mkdtemp(dir="/run/tunnels-world/tmp"))
    with bench_world(tmp) as world:
        site = TwoHosts(world, client="outer", big=True, big_size=SIZE_MIB << 20)
        outer = site.client
        outer.use_nameserver("10.0.0.1")
        Dante(site.srv, "10.0.0.1", 1080)
        conf = tmp / "tunnels.yml"
        conf.write_text(CONFIG)

        run_true = [tunnels, "run", "-c", str(conf), "--", "true"]
        strict_true = [tunnels, "run", "--strict", "-c", str(conf), "--", "true"]
        unshare_true = ["unshare", "--net", "--mount", "true"]
        for argv in (run_true, strict_true, unshare_true):
            timed(outer, argv)  # warm caches
        starts: dict[str, list[float]] = {"run": [], "strict": [], "unshare": []}
        for _ in range(args.starts):
            starts["run"].append(timed(outer, run_true))
            starts["strict"].append(timed(outer, strict_true))
            starts["unshare"].append(timed(outer, unshare_true))
        # `ip netns exec` itself costs a few ms in every figure; measured too.
        starts["netns exec"] = [timed(outer, ["true"]) for _ in range(args.starts)]

        sandbox = [tunnels, "run", "-c", str(conf), "--"]
        system_conf = tmp / "system.yml"
        system_conf.write_text(CONFIG)
        downloads: dict[str, list[float]] = {"run": [], "system": []}
        for _ in range(args.downloads):
            downloads["run"].append(speed(outer, sandbox))
            proc = outer.spawn([tunnels, "system", "-q", str(system_conf)], name="system",
                               line_buffered=False)
            w.wait_until(lambda: w.dig(outer, "127.0.0.1", "x.via-dante.test").status ==
                         "NOERROR", what="tunnels system to answer")
            resolver = tmp / "system.resolv.conf"
            resolver.write_text("nameserver 127.0.0.1\n")
            downloads["system"].append(speed(outer, [
                "sh", "-c", f'mount --bind {resolver} /etc/resolv.conf && exec "$@"', "sh"]))
            proc.stop()

    med = {k: statistics.median(v) for k, v in starts.items()}
    dl = {k: statistics.median(v) for k, v in downloads.items()}
    cpu = cpu_model()
    rows = [
        "| Measurement | Goal | tunnels | Comparison | Ratio | Goal met |",
        "|---|---|---|---|---|---|",
        f"| `tunnels run -- true`, wall time (median of {args.starts}) | < 50 ms | "
        f"{med['run']:.1f} ms | `unshare --net --mount true`: {med['unshare']:.1f} ms | "
        f"{med['run'] / med['unshare']:.1f}× | {'met' if med['run'] < 50 else 'missed'} |",
        f"| `tunnels run --strict -- true` (no veth, no NAT) | | {med['strict']:.1f} ms | | | |",
        f"| download of {SIZE_MIB} MiB through a SOCKS5 rule (dante), median of "
        f"{args.downloads} | ≥ 0.95× system mode | {dl['run']:.2f} Gbit/s in the sandbox | "
        f"{dl['system']:.2f} Gbit/s under `tunnels system` | {dl['run'] / dl['system']:.2f}× | "
        f"{'met' if dl['run'] >= 0.95 * dl['system'] else 'missed'} |",
    ]
    section = "\n".join([
        "<!-- run-bench:begin -->",
        "## `tunnels run`: start-up and sandbox throughput",
        "",
        *rows,
        "",
        f"Every start-up figure includes `ip netns exec` into the world's host "
        f"({med['netns exec']:.1f} ms median for `true` alone). The download goes "
        "client → tunnels' engine → dante → nginx over a veth pair, on the same 2 cores "
        "as every process of the benchmark.",
        "",
        f"- Machine: nproc {os.cpu_count()}, {cpu}",
        f"- tunnels at {tunnels_commit(ROOT)}, Release build",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "- Command: `bench/run-sandbox-bench.sh --update-doc`",
        "<!-- run-bench:end -->",
    ])
    print(section)
    if args.update_doc:
        update_doc(ROOT / "docs" / "BENCHMARKS.md", section, "<!-- run-bench:begin -->",
                   "<!-- run-bench:end -->")
    return 0


if __name__ == "__main__":
    sys.exit(main())
