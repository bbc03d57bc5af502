#!/bin/bash
# bench/run-ssh-bench.sh [ssh_bench.py options...]
#
# tunnels' ssh proxy against `ssh -D` (curl --socks5-hostname through it) and
# sshuttle, all to one sshd: bulk throughput and new connections per second
# (see docs/BENCHMARKS.md). Builds a Release tunnels in build-bench/,
# installs what is missing (root only), then runs bench/ssh_bench.py inside a
# private world: new user, network, mount and PID namespaces, as
# tests/integration/run-in-world builds them (with the caller's /etc/subuid
# range mapped, which sshd's privilege separation needs). Nothing is changed
# outside the world.
#
#   bench/run-ssh-bench.sh                 # 5 runs per contender, print the table
#   bench/run-ssh-bench.sh --update-doc    # ... and rewrite the ssh-bench section
#   bench/run-ssh-bench.sh --runs 1 --seconds 3 --big-mib 128   # quick look
#
# TUNNELS_BENCH_NO_BUILD=1 skips the build; TUNNELS_BENCH_BIN=PATH measures
# that binary (see bench/lib.sh).
set -euo pipefail
bench_name=ssh bench_script=ssh_bench.py
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_start "$@"

bench_need /usr/sbin/sshd openssh-server
bench_need ssh openssh-client
bench_need sshuttle sshuttle
bench_need newuidmap uidmap
bench_need wrk wrk
bench_need /usr/sbin/nginx nginx-light
bench_need curl curl
bench_need /usr/sbin/dnsmasq dnsmasq-base
bench_need dig bind9-dnsutils
bench_need nft nftables
bench_install
bench_build
# sshd switches to its own user: the world needs the caller's subordinate ids.
bench_map_subordinate_ids
bench_enter_world "bench/run-ssh-bench.sh${*:+ $*}" "$@"
