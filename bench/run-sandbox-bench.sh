#!/bin/bash
# bench/run-sandbox-bench.sh [--update-doc] [--starts N] [--downloads N]
#
# Start-up of `tunnels run` and throughput inside its sandbox (see
# docs/BENCHMARKS.md). Builds a Release tunnels in build-bench/, then runs
# bench/sandbox_bench.py in a private world of user, network, mount and PID
# namespaces; nothing touches the real host's network.
set -euo pipefail
bench_name=sandbox bench_script=sandbox_bench.py
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_start "$@"

bench_need curl curl
bench_need /usr/sbin/nginx nginx-light
bench_need danted dante-server
bench_need /usr/sbin/dnsmasq dnsmasq-base
bench_need dig bind9-dnsutils
bench_need nft nftables
bench_install
bench_build
bench_enter_world "bench/run-sandbox-bench.sh${*:+ $*}" "$@"
