#!/bin/bash
# bench/run-engine-bench.sh [engine_bench.py options...]
#
# The proxy engine against redsocks, curl's own SOCKS5 and no proxy:
# throughput, new connections per second, CPU per connection and per GiB,
# memory per idle connection (see docs/BENCHMARKS.md). Builds a Release
# tunnels in build-bench/, installs the peers when missing (root only), then
# runs bench/engine_bench.py inside a private world: new user, network, mount
# and PID namespaces, as tests/integration/run-in-world builds them. Every
# packet stays inside the world's namespaces; no rule or route is added
# outside it, and every process started in the world dies with it.
#
#   bench/run-engine-bench.sh                 # 5 runs per contender, print the table
#   bench/run-engine-bench.sh --update-doc    # ... and rewrite the engine-bench section
#                                             #     of docs/BENCHMARKS.md
#   bench/run-engine-bench.sh --runs 1 --seconds 3 --big-mib 256   # quick look
#   bench/run-engine-bench.sh --help          # every option
#
# TUNNELS_BENCH_NO_BUILD=1 skips the build; TUNNELS_BENCH_BIN=PATH measures
# that binary (see bench/lib.sh).
set -euo pipefail
bench_name=engine bench_script=engine_bench.py
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_start "$@"

bench_need redsocks redsocks
bench_need wrk wrk
bench_need danted dante-server
bench_need /usr/sbin/nginx nginx-light
bench_need curl curl
bench_need /usr/sbin/dnsmasq dnsmasq-base
bench_need dig bind9-dnsutils
bench_need nft nftables
bench_need ss iproute2
bench_install
bench_build
bench_enter_world "bench/run-engine-bench.sh${*:+ $*}" "$@"
