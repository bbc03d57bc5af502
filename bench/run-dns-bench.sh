#!/bin/bash
# bench/run-dns-bench.sh [dns_bench.py options...]
#
# DNS throughput of tunnels against dnsmasq, measured with dnsperf side by
# side in one run (see docs/BENCHMARKS.md). Builds a Release tunnels in
# build-bench/, installs dnsperf and dnsmasq-base when missing (root only),
# then runs bench/dns_bench.py inside a private world: new user, network,
# mount and PID namespaces, as tests/integration/run-in-world builds them.
# Nothing touches the real host's network; every process started in the
# world dies with it.
#
#   bench/run-dns-bench.sh                 # 7 runs x 6 s per contender, print the table
#   bench/run-dns-bench.sh --update-doc    # ... and rewrite the dns-bench section
#                                          #     of docs/BENCHMARKS.md
#   bench/run-dns-bench.sh --runs 1 --seconds 3 --scenario fake   # quick look
#   bench/run-dns-bench.sh --baseline-rev REV   # also measure tunnels as of git
#                                          # revision REV (built in build-bench-baseline/)
#   bench/run-dns-bench.sh --help          # every option
#
# TUNNELS_BENCH_NO_BUILD=1 skips the builds (uses the binaries as they are).
set -euo pipefail
bench_name=dns bench_script=dns_bench.py
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_start "$@"

original_args="$*"
args=()
baseline_rev=
while (($#)); do
  case "$1" in
    --baseline-rev) baseline_rev=${2:?--baseline-rev needs a git revision}; shift 2 ;;
    --baseline-rev=*) baseline_rev=${1#*=}; shift ;;
    *) args+=("$1"); shift ;;
  esac
done

bench_need dnsperf dnsperf
bench_need /usr/sbin/dnsmasq dnsmasq-base
bench_need dig bind9-dnsutils
bench_need chrt util-linux
bench_install
bench_build
# The baseline: the tree as of that revision, built the same way.
baseline_args=()
if [[ -n "$baseline_rev" ]]; then
  label=$(git -C "$bench_root" rev-parse --short "$baseline_rev^{commit}") \
    || bench_die "--baseline-rev $baseline_rev: not a revision of this repository"
  bdir="$bench_root/build-bench-baseline"
  if [[ "${TUNNELS_BENCH_NO_BUILD-}" != 1 ]]; then
    rm -rf "$bdir/src" && mkdir -p "$bdir/src"
    git -C "$bench_root" archive "$label" | tar -x -C "$bdir/src"
    (cmake -S "$bdir/src" -B "$bdir/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
       -DTUNNELS_TESTS=OFF >&2 &&
     cmake --build "$bdir/build" --target tunnels -j2 >&2) || bench_die "building $label failed"
  fi
  [[ -x "$bdir/build/launcher/tunnels" ]] || bench_die "$bdir/build/launcher/tunnels not found"
  baseline_args=(--baseline "$bdir/build/launcher/tunnels" --baseline-label "$label")
fi

bench_enter_world "bench/run-dns-bench.sh${original_args:+ $original_args}" \
  "${baseline_args[@]}" "${args[@]}"
