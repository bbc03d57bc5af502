#!/usr/bin/python3
"""DNS throughput of tunnels against dnsmasq, measured with dnsperf.

Run it through bench/run-dns-bench.sh, which builds a Release tunnels and
enters a private world (user + network + mount + PID namespaces); inside,
this script builds the topology with tests/integration/world.py:

    host "bench" (127.0.0.1)                          host "up" (10.0.0.1)
      dnsperf                                            dnsmasq :53, the upstream:
      tunnels :5301  .bench.test: tor,                     address=/fwd.test/192.0.2.1
                     upstreamDns 10.0.0.1  ──veth──►
      dnsmasq :5302  address=/bench.test/198.18.0.1
      dnsmasq :5304  server=10.0.0.1, cache-size=0 ──►
      (tunnels :5305, the --baseline binary, if given)

Scenarios (each contender gets the same query file and dnsperf settings):

  fake     N distinct A queries hNNNNN.bench.test: tunnels answers them with
           fake addresses (rule `.bench.test: tor`, the proxy never
           contacted), dnsmasq from its own address= data.
  forward  N distinct A queries fNNNNN.fwd.test, for which tunnels has no rule:
           both forward every query to the upstream dnsmasq (dnsmasq with its
           cache off) and relay the reply.

Every contender runs once per run, the order alternating from run to run
(A B, B A, ...) so that drift of the noisy machine hits both alike; the table
reports medians over the runs. Every server stays up for the whole run and is
warmed up with one pass over the query file first (tunnels then has every fake
address mapped, as in steady use).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import NamedTuple

import world as w  # tests/integration/world.py, on PYTHONPATH (bench/lib.sh)
from benchlib import (CLK_TCK, DNSMASQ, arguments, bench_world, closing, enter, first_line, log,
                      machine as machine_facts, median, publish)

BEGIN = "<!-- dns-bench:begin -->"
END = "<!-- dns-bench:end -->"

UPSTREAM_IP = "10.0.0.1"
BENCH_IP = "10.0.0.2"
FWD_ANSWER = "192.0.2.1"
DNSMASQ_FAKE_ANSWER = "198.18.0.1"
# One tunnels process serves both scenarios, as it would on a real machine
# (each one adds its nftables table, which every packet in the namespace
# passes); dnsmasq needs one configuration for each.
PORTS = {"tunnels": 5301, "baseline": 5305, ("fake", "dnsmasq"): 5302,
         ("forward", "dnsmasq"): 5304}
CONTENDERS = ("tunnels", "dnsmasq")
GOALS = {"fake": 1.2, "forward": 1.0}
# How dnsperf is scheduled. "batch" (SCHED_BATCH) keeps its wake-ups from
# preempting the server under test: each reply wakes one of dnsperf's
# receiving threads, and on a 2-core machine that thread would otherwise
# often take the server's CPU at once, after every single reply, which a
# client elsewhere would not do. "normal" is plain co-location.
SCHED = {"batch": ["chrt", "--batch", "0"], "normal": []}


# --------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------


class Server(NamedTuple):
    name: str
    proc: w.Proc
    port: int

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK


def dnsmasq_argv(address: str, port: int, extra: list[str]) -> list[str]:
    # As world.Dnsmasq, but without --log-queries: logging every query would
    # cost more than answering it.
    return [DNSMASQ, "--keep-in-foreground", "--user=root", "--group=",
            f"--pid-file=/run/tunnels-world/dnsmasq-{port}.pid",
            "--no-resolv", "--no-hosts", "--no-poll", "--log-facility=-",
            f"--listen-address={address}", "--bind-interfaces", f"--port={port}",
            *extra]


def wait_answer(host: w.Host, server: str, port: int, name: str, check, what: str) -> None:
    def probe():
        r = w.dig(host, server, name, port=port, timeout=1)
        return r if r.status == "NOERROR" and r.addresses and check(r.addresses[0]) else None
    w.wait_until(probe, timeout=15, what=what)


def tunnels_config(tmp: Path, port: int) -> Path:
    conf = tmp / f"tunnels-{port}.yml"
    conf.write_text(textwrap.dedent(f"""\
        upstreamDns: {UPSTREAM_IP}
        dnsBindAddress: 127.0.0.1
        dnsPort: {port}
        overwriteResolvconf: false
        iptablesChain: tunnels_bench_{port}
        proxies:
          tor: {{type: socks5, address: 127.0.0.1:9050}}
        rules:
          .bench.test: tor
        """))
    return conf


def start_servers(world: w.World, tunnels: Path, scenarios: list[str],
                  dnsmasq_cache: int, forward_max: int,
                  baseline: Path | None = None) -> dict[tuple[str, str], Server]:
    bench, up = world.host("bench"), world.host("up")
    world.link(bench, up, f"{BENCH_IP}/24", f"{UPSTREAM_IP}/24")
    servers: dict[tuple[str, str], Server] = {}
    if "forward" in scenarios:
        upstream = up.spawn(dnsmasq_argv(UPSTREAM_IP, 53, [
            "--cache-size=0", "--local=/test/", f"--address=/fwd.test/{FWD_ANSWER}",
            f"--dns-forward-max={forward_max}"]), name="dnsmasq-upstream", line_buffered=False)
        servers[("upstream", "dnsmasq")] = Server("upstream", upstream, 53)
        wait_answer(up, UPSTREAM_IP, 53, "probe.fwd.test", lambda a: a == FWD_ANSWER,
                    "the upstream dnsmasq")
    binaries = {"tunnels": tunnels, **({"baseline": baseline} if baseline else {})}
    for who, binary in binaries.items():
        port = PORTS[who]
        proc = bench.spawn([str(binary), "system", "-q",
                            str(tunnels_config(world.tmp_path, port))],
                           name=f"{who}-{port}", line_buffered=False)
        for scenario in scenarios:
            servers[(scenario, who)] = Server(who, proc, port)
    for scenario in scenarios:
        port = PORTS[(scenario, "dnsmasq")]
        if scenario == "fake":
            extra = [f"--cache-size={dnsmasq_cache}", "--local=/bench.test/",
                     f"--address=/bench.test/{DNSMASQ_FAKE_ANSWER}"]
        else:
            # --dns-forward-max: dnsmasq's default of 150 queries in flight
            # would drop part of dnsperf's; tunnels allows 4096.
            extra = ["--cache-size=0", f"--server={UPSTREAM_IP}",
                     f"--dns-forward-max={forward_max}"]
        proc = bench.spawn(dnsmasq_argv("127.0.0.1", port, extra), name=f"dnsmasq-{port}",
                           line_buffered=False)
        servers[(scenario, "dnsmasq")] = Server("dnsmasq", proc, port)
    fake_net = re.compile(r"198\.1[89]\.\d+\.\d+$")
    for (scenario, who), s in servers.items():
        if scenario == "fake":
            check = (lambda a: a == DNSMASQ_FAKE_ANSWER) if who == "dnsmasq" else \
                    (lambda a: bool(fake_net.match(a)))
            wait_answer(bench, "127.0.0.1", s.port, "probe.bench.test", check,
                        f"{who} ({scenario}) on port {s.port}")
        elif scenario == "forward":
            wait_answer(bench, "127.0.0.1", s.port, "probe.fwd.test", lambda a: a == FWD_ANSWER,
                        f"{who} ({scenario}) on port {s.port}")
    return servers


# --------------------------------------------------------------------------
# dnsperf
# --------------------------------------------------------------------------


class Sample(NamedTuple):
    sent: int
    completed: int
    lost: int
    qps: float
    latency: float        # average, seconds
    rcodes: str           # "NOERROR 123 (100.00%)"
    server_cpu: float     # server CPU seconds during the run
    client_cpu: float     # dnsperf's CPU seconds
    runtime: float


_NUM = r"([\d.]+)"


def parse_dnsperf(out: str) -> Sample:
    def grab(label: str) -> str:
        m = re.search(rf"^\s*{re.escape(label)}:\s*(.*)$", out, re.MULTILINE)
        if not m:
            raise AssertionError(f"dnsperf printed no '{label}':\n{out}")
        return m.group(1).strip()

    def first_number(label: str) -> float:
        m = re.match(_NUM, grab(label))
        if not m:
            raise AssertionError(f"dnsperf's '{label}' is not a number:\n{out}")
        return float(m.group(1))

    return Sample(sent=int(first_number("Queries sent")),
                  completed=int(first_number("Queries completed")),
                  lost=int(first_number("Queries lost")),
                  qps=first_number("Queries per second"),
                  latency=first_number("Average Latency (s)"),
                  rcodes=grab("Response codes"), server_cpu=0.0, client_cpu=0.0,
                  runtime=first_number("Run time (s)"))


def run_dnsperf(host: w.Host, server: Server, datafile: Path, args: list[str],
                seconds: float | None, passes: int | None = None,
                sched: str = "normal") -> Sample:
    argv = [*SCHED[sched], "dnsperf", "-s", "127.0.0.1", "-p", str(server.port), "-d",
            str(datafile), *args]
    if seconds is not None:
        argv += ["-l", f"{seconds:g}"]
    if passes is not None:
        argv += ["-n", str(passes)]
    cpu0 = server.cpu_seconds()
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = host.run(argv, timeout=(seconds or 60) + 60)
    children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    sample = parse_dnsperf(result.stdout)
    # `ip netns exec` execs dnsperf in the child it runs: the child's rusage is dnsperf's.
    client = (children1.ru_utime + children1.ru_stime) - (children0.ru_utime + children0.ru_stime)
    return sample._replace(server_cpu=server.cpu_seconds() - cpu0, client_cpu=client)


def write_queries(path: Path, pattern: str, count: int) -> Path:
    path.write_text("".join(f"{pattern % i} A\n" for i in range(count)))
    return path


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------


def fmt_qps(q: float) -> str:
    return f"{q:,.0f}"


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f} ms"


def machine() -> dict[str, str]:
    dnsperf_version = "unknown"
    out = subprocess.run(["dnsperf", "-h"], capture_output=True, text=True)
    m = re.search(r"Version (\S+)", out.stdout + out.stderr)
    if m:
        dnsperf_version = m.group(1)
    dnsmasq_version = first_line([DNSMASQ, "--version"])
    m = re.match(r"Dnsmasq version (\S+)", dnsmasq_version)
    return machine_facts(dnsperf=dnsperf_version,
                         dnsmasq=m.group(1) if m else dnsmasq_version)


def per_query_us(samples: list[Sample], field: str) -> str:
    """Median over the runs of `field` (CPU seconds) per answered query."""
    return f"{median([getattr(s, field) / max(1, s.completed) * 1e6 for s in samples]):.1f} µs"


def paired_ratio(a: list[Sample], b: list[Sample]) -> float:
    """The median of the runs' a/b qps ratios. The two are measured back to
    back within a run, so this is the figure least disturbed by the machine's
    drift from run to run."""
    return median([x.qps / y.qps for x, y in zip(a, b) if y.qps])


def report(results: dict[tuple[str, str, str], list[Sample]], scenarios: list[str],
           args: argparse.Namespace, info: dict[str, str]) -> str:
    dnsperf_args = " ".join(args.dnsperf_args)
    sched_text = {
        "batch": "dnsperf as a `SCHED_BATCH` task (`chrt --batch 0`), so that its wake-ups "
                 "do not preempt the server",
        "normal": "dnsperf as a normal task",
    }
    verdicts, blocks = [], []
    for mode in args.sched:
        rows, cpu_rows, details, before_rows = [], [], [], []
        for scenario in scenarios:
            t = results[(mode, scenario, "tunnels")]
            d = results[(mode, scenario, "dnsmasq")]
            ratio = paired_ratio(t, d)
            tl, dl = sum(s.lost for s in t), sum(s.lost for s in d)
            ts, ds = sum(s.sent for s in t), sum(s.sent for s in d)
            rows.append(f"| {scenario} | {fmt_qps(median([s.qps for s in t]))} "
                        f"| {fmt_qps(median([s.qps for s in d]))} | **{ratio:.2f}×** "
                        f"| {tl:,} of {ts:,} | {dl:,} of {ds:,} "
                        f"| {fmt_ms(median([s.latency for s in t]))} "
                        f"| {fmt_ms(median([s.latency for s in d]))} |")
            cpu_rows.append(f"| {scenario} | {per_query_us(t, 'server_cpu')} "
                            f"| {per_query_us(d, 'server_cpu')} "
                            f"| {per_query_us(t, 'client_cpu')} "
                            f"| {per_query_us(d, 'client_cpu')} |")
            goal = GOALS[scenario]
            met = ratio >= goal and (scenario != "fake" or tl == 0)
            verdicts.append(f"- **{scenario}**, {sched_text[mode]}: goal ≥ {goal:.1f}×"
                            f"{' with no lost queries' if scenario == 'fake' else ''}; "
                            f"measured **{ratio:.2f}×**, {tl:,} lost: "
                            f"{'met' if met else '**not met**'}.")
            others = [("tunnels", t), ("dnsmasq", d)]
            if (mode, scenario, "baseline") in results:
                b = results[(mode, scenario, "baseline")]
                others.append((f"tunnels at {args.baseline_label}", b))
                before_rows.append(
                    f"| {scenario} | {fmt_qps(median([s.qps for s in b]))} "
                    f"| {fmt_qps(median([s.qps for s in t]))} | **{paired_ratio(t, b):.2f}×** "
                    f"| {paired_ratio(b, d):.2f}× | {sum(s.lost for s in b):,} | {tl:,} "
                    f"| {per_query_us(b, 'server_cpu')} | {per_query_us(t, 'server_cpu')} |")
            for who, samples in others:
                codes = sorted({re.sub(r" \d+ \(", " (", s.rcodes) for s in samples})
                details.append(f"- {scenario}, {who}: "
                               + ", ".join(fmt_qps(s.qps) for s in samples)
                               + f" qps; lost {', '.join(str(s.lost) for s in samples)}; "
                               + f"response codes {'; '.join(codes)}")
            details.append(f"- {scenario}, tunnels / dnsmasq: "
                           + ", ".join(f"{x.qps / y.qps:.2f}" for x, y in zip(t, d) if y.qps))
        heading = {"batch": "dnsperf under `SCHED_BATCH`", "normal": "dnsperf as a normal task"}
        block = [
            f"### {heading[mode]}",
            "",
            "| scenario | tunnels qps | dnsmasq qps | ratio | tunnels lost | dnsmasq lost "
            "| tunnels latency | dnsmasq latency |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
            *rows,
            "",
            "CPU time per answered query: the server process's user + system time (which "
            "includes the kernel's loopback delivery of its replies, and waking dnsperf), and "
            "dnsperf's own:",
            "",
            "| scenario | tunnels | dnsmasq | dnsperf against tunnels "
            "| dnsperf against dnsmasq |",
            "| --- | ---: | ---: | ---: | ---: |",
            *cpu_rows,
            "",
        ]
        if before_rows:
            block += [
                f"Before and after the optimisations below: tunnels at {args.baseline_label}, "
                "measured in the same runs as a third contender:",
                "",
                f"| scenario | {args.baseline_label} qps | now qps | now / before "
                f"| {args.baseline_label} / dnsmasq | lost before | lost now "
                "| server CPU/query before | now |",
                "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
                *before_rows,
                "",
            ]
        block += ["Per run (qps, lost queries, and the run's ratio):", "", *details, ""]
        blocks += block
    lines = [
        BEGIN,
        "## DNS: tunnels against dnsmasq",
        "",
        "Goal (from the project's issue): with `dnsperf` on the same machine, fake answers "
        "≥ 1.2× the queries per second of dnsmasq answering from its own `address=` data, "
        "with no lost queries; forwarded queries ≥ 1.0× dnsmasq forwarding to the same "
        "upstream with its cache off.",
        "",
        *verdicts,
        "",
        f"{args.runs} runs of {args.seconds:g} s per contender, scenario and way of "
        "scheduling dnsperf; within a run the contenders are measured back to back, in "
        "alternating order from run to run. qps and latency (dnsperf's average latency) "
        "are medians over the runs, CPU per query too; the ratio is the median of the runs' "
        "tunnels / dnsmasq ratios, so that the machine's drift between runs cancels out. "
        "Lost queries are summed over all runs.",
        "",
        "Why two ways of scheduling dnsperf: on 2 cores, every reply wakes one of dnsperf's "
        "receiving threads, which the scheduler mostly puts on the server's core and runs "
        "at once, so the server is switched out after each reply it sends, also in the "
        "middle of a `sendmmsg` batch. A client on other cores, as in any throughput test "
        "of a server, would not do that; `SCHED_BATCH` (no preemption on wake-up, no "
        "pinning, the same for both servers) comes closest to it on this machine. The plain "
        "run shows what co-location with default scheduling gives. Both are reported.",
        "",
        *blocks,
        "What makes tunnels fast here (`resolver/`): UDP queries are read with `recvmmsg` and "
        "answered with `sendmmsg`, up to 64 per system call, and forwarded replies that are "
        "ready together leave in one `sendmmsg`; the replies reach dnsperf in bursts, so it "
        "too wakes up less often (see its CPU per query). Fake A answers are written straight "
        "from the query's bytes. The UDP socket asks for a 1 MiB receive buffer, so the "
        "opening burst of dnsperf's queries is not dropped. A forwarded query still gets a "
        "fresh socket (fresh source port) and a random ID, and its reply is checked against "
        "it, but no longer a zeroed 64 KiB buffer of its own. What is left is mostly the "
        "kernel's: sending a reply over loopback (including its delivery and the wake-up of "
        "dnsperf) is about three quarters of tunnels' CPU per fake answer.",
        "",
        "Setup (`bench/dns_bench.py`): one private network namespace holds dnsperf and "
        "every server under test on 127.0.0.1 (one tunnels process serves both scenarios, "
        "as on a real machine; its nftables table, which every packet in the namespace "
        "passes, is there for dnsmasq's packets too"
        + (", and so is the baseline's" if args.baseline else "")
        + "); the upstream dnsmasq (cache off, answering `fwd.test` from `address=` data, no "
        "query log) sits in a second namespace behind a veth pair.",
        "",
        f"- **fake**: {args.names:,} distinct names `hNNNNN.bench.test` (type A). tunnels: "
        "rule `.bench.test: tor` (a socks5 proxy, never contacted), `tunnels system -q`. "
        f"dnsmasq: `--address=/bench.test/{DNSMASQ_FAKE_ANSWER} --local=/bench.test/ "
        f"--cache-size={args.dnsmasq_cache}`, no query log.",
        f"- **forward**: {args.names:,} distinct names `fNNNNN.fwd.test` (type A), no rule "
        f"for them. tunnels: `upstreamDns: {UPSTREAM_IP}`. dnsmasq: `--server={UPSTREAM_IP} "
        f"--cache-size=0 --dns-forward-max={args.forward_max}` (its default of 150 queries in "
        "flight would drop some of dnsperf's; tunnels allows 4096).",
        f"- dnsperf: `dnsperf -s 127.0.0.1 -p PORT -d QUERIES {dnsperf_args} -l {args.seconds:g}`, "
        "after one warm-up pass over the file (`-n 1`) per server. `-T 2` (two sending and "
        "two receiving threads) because with one thread the thread that sends the queries "
        "is the bottleneck whenever the machine is otherwise idle: both servers then answer "
        "about as fast as it sends (with `-T 1` we saw fake ratios of 1.0–1.1 on a quiet "
        "machine, 1.15–1.3 under load from other jobs), which measures dnsperf rather than "
        "the servers. dnsmasq's lost queries are the opening burst of each run overflowing "
        "its socket's default receive buffer; each holds one of dnsperf's query slots until "
        "the 2 s timeout, a few per cent of its window for the first seconds of a run.",
        "- Nothing is pinned: dnsperf, the server under test and, for forward, the upstream "
        f"share the machine's {info['nproc']} cores, and the machine is shared with other "
        f"work (load average {info['load_before']} before the runs, {info['load_after']} "
        "after), so every absolute number is capped and coloured by dnsperf's own CPU use "
        "and by the neighbours; the ratio, measured side by side, is the meaningful figure.",
        *closing(info, f"dnsperf {info['dnsperf']}, dnsmasq {info['dnsmasq']},", "dns", END),
    ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def main() -> int:
    p = arguments(__doc__, "dns", runs=7, seconds=6, seconds_help="dnsperf -l")
    p.add_argument("--names", type=int, default=10000, help="distinct names (default 10000)")
    p.add_argument("--scenario", action="append", choices=["fake", "forward"],
                   help="only this scenario (repeatable; default both)")
    p.add_argument("--dnsperf-args", default="-c 4 -T 2 -q 200 -t 2",
                   help="dnsperf settings besides -s -p -d -l (default: %(default)s)")
    p.add_argument("--dnsmasq-cache", type=int, default=10000,
                   help="--cache-size of the fake dnsmasq (default 10000)")
    p.add_argument("--forward-max", type=int, default=4096,
                   help="--dns-forward-max of the dnsmasqs (default 4096)")
    p.add_argument("--sched", default="batch,normal",
                   help="how dnsperf is scheduled, comma-separated: batch (SCHED_BATCH), "
                        "normal (default: %(default)s)")
    p.add_argument("--baseline", type=Path,
                   help="another tunnels binary (e.g. an older commit) measured as a third "
                        "contender, to show the effect of a change")
    p.add_argument("--baseline-label", default="baseline",
                   help="what --baseline is, for the report (e.g. its commit)")
    p.add_argument("--keep-logs", type=Path, help="copy the servers' logs here at the end")
    args = p.parse_args()
    args.dnsperf_args = args.dnsperf_args.split()
    args.sched = [m.strip() for m in args.sched.split(",") if m.strip()]
    if not args.sched or any(m not in SCHED for m in args.sched):
        p.error(f"--sched: choose from {', '.join(SCHED)}")
    scenarios = args.scenario or ["fake", "forward"]
    scenarios = [s for s in ("fake", "forward") if s in scenarios]

    tmp = enter("dns_bench.py", "run-dns-bench.sh", args.tunnels, ("dnsperf", "dig", DNSMASQ))
    if tmp is None:
        return 2
    if args.baseline and not os.access(args.baseline, os.X_OK):
        log(f"dns_bench.py: {args.baseline} is not an executable")
        return 2
    contenders = CONTENDERS + (("baseline",) if args.baseline else ())

    load_before = "%.1f" % os.getloadavg()[0]
    with bench_world(tmp, args.keep_logs) as world:
        servers = start_servers(world, args.tunnels, scenarios, args.dnsmasq_cache,
                                args.forward_max, args.baseline)
        bench = world.hosts["bench"]
        files = {"fake": write_queries(tmp / "fake.txt", "h%05d.bench.test", args.names),
                 "forward": write_queries(tmp / "forward.txt", "f%05d.fwd.test", args.names)}
        for scenario in scenarios:
            for who in contenders:
                s = run_dnsperf(bench, servers[(scenario, who)], files[scenario],
                                args.dnsperf_args, None, passes=1, sched=args.sched[0])
                log(f"warm-up {scenario:7} {who:8}: {fmt_qps(s.qps):>9} qps, lost {s.lost}")
        results: dict[tuple[str, str, str], list[Sample]] = {
            (mode, sc, who): [] for mode in args.sched for sc in scenarios for who in contenders}
        for run in range(args.runs):
            order = contenders if run % 2 == 0 else tuple(reversed(contenders))
            for mode in args.sched:
                for scenario in scenarios:
                    for who in order:
                        server = servers[(scenario, who)]
                        if not server.proc.alive():
                            raise AssertionError(f"{who} ({scenario}) died:\n{server.proc.tail()}")
                        s = run_dnsperf(bench, server, files[scenario], args.dnsperf_args,
                                        args.seconds, sched=mode)
                        results[(mode, scenario, who)].append(s)
                        log(f"run {run + 1}/{args.runs} {mode:6} {scenario:7} {who:8}: "
                            f"{fmt_qps(s.qps):>9} qps, lost {s.lost}, latency "
                            f"{fmt_ms(s.latency)}, server CPU "
                            f"{s.server_cpu / s.runtime * 100:.0f}%, {s.rcodes}")
        for (scenario, who), s in servers.items():
            if not s.proc.alive():
                raise AssertionError(f"{who} ({scenario}) died:\n{s.proc.tail()}")

    info = machine()
    info["load_before"], info["load_after"] = load_before, "%.1f" % os.getloadavg()[0]
    publish("dns_bench.py", report(results, scenarios, args, info), args, BEGIN, END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
