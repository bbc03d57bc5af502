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

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)

inside_world() {
  # Private /run: `ip netns add` needs a writable /run/netns; logs live there.
  mount -t tmpfs -o mode=0755 tunnels-bench /run
  mkdir -p /run/netns /run/lock /run/tunnels-world/tmp
  ip link set lo up
  export TUNNELS_WORLD=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
  # bash stays PID 1 (it reaps orphans); the bench is its child.
  /usr/bin/python3 "$here/dns_bench.py" "$@" && rc=0 || rc=$?
  exit "$rc"
}

if [[ "${1-}" == "--inside-world" ]]; then
  shift
  inside_world "$@"
fi

die() {
  echo "run-dns-bench: $*" >&2
  exit 1
}

original_args="$*"
args=()
baseline_rev=
while (($#)); do
  case "$1" in
    -h|--help) exec /usr/bin/python3 "$here/dns_bench.py" --help ;;
    --baseline-rev) baseline_rev=${2:?--baseline-rev needs a git revision}; shift 2 ;;
    --baseline-rev=*) baseline_rev=${1#*=}; shift ;;
    *) args+=("$1"); shift ;;
  esac
done

# Tools. dnsperf and dnsmasq are installed only when missing, and only as root.
need=()
command -v dnsperf >/dev/null || need+=(dnsperf)
[[ -x /usr/sbin/dnsmasq ]] || need+=(dnsmasq-base)
command -v dig >/dev/null || need+=(bind9-dnsutils)
/usr/bin/python3 -c 'import pytest' 2>/dev/null || need+=(python3-pytest)  # world.py imports it
if ((${#need[@]})); then
  [[ $(id -u) == 0 ]] || die "missing packages: ${need[*]} (install them: sudo apt-get install -y ${need[*]})"
  echo "run-dns-bench: installing ${need[*]}" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}" >&2 \
    || { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y \
           --no-install-recommends "${need[@]}" >&2; }
fi
for tool in unshare ip mount chrt; do
  command -v "$tool" >/dev/null || die "'$tool' not found (packages util-linux, iproute2)"
done

# A Release build, the same settings as every other benchmark in bench/.
if [[ "${TUNNELS_BENCH_NO_BUILD-}" != 1 ]]; then
  (cd "$root" &&
   cmake -S . -B build-bench -G Ninja -DCMAKE_BUILD_TYPE=Release -DTUNNELS_TESTS=OFF >&2 &&
   cmake --build build-bench --target tunnels -j2 >&2) || die "building tunnels failed"
fi
tunnels="$root/build-bench/launcher/tunnels"
[[ -x "$tunnels" ]] || die "$tunnels not found (build it, or unset TUNNELS_BENCH_NO_BUILD)"

# The baseline: the tree as of that revision, built the same way.
baseline_args=()
if [[ -n "$baseline_rev" ]]; then
  label=$(git -C "$root" rev-parse --short "$baseline_rev^{commit}") \
    || die "--baseline-rev $baseline_rev: not a revision of this repository"
  bdir="$root/build-bench-baseline"
  if [[ "${TUNNELS_BENCH_NO_BUILD-}" != 1 ]]; then
    rm -rf "$bdir/src" && mkdir -p "$bdir/src"
    git -C "$root" archive "$label" | tar -x -C "$bdir/src"
    (cmake -S "$bdir/src" -B "$bdir/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
       -DTUNNELS_TESTS=OFF >&2 &&
     cmake --build "$bdir/build" --target tunnels -j2 >&2) || die "building $label failed"
  fi
  [[ -x "$bdir/build/launcher/tunnels" ]] || die "$bdir/build/launcher/tunnels not found"
  baseline_args=(--baseline "$bdir/build/launcher/tunnels" --baseline-label "$label")
fi

unshare_args=(--user --map-root-user --net --mount --propagation private
              --pid --fork --mount-proc --kill-child)
probe_err=$(unshare "${unshare_args[@]}" -- ip link set lo up 2>&1) \
  || die "cannot build the private world (user namespaces): $probe_err"

export TUNNELS_BENCH_ROOT="$root"
export TUNNELS_BENCH_COMMAND="bench/run-dns-bench.sh${original_args:+ $original_args}"
exec unshare "${unshare_args[@]}" -- /bin/bash "${BASH_SOURCE[0]}" --inside-world \
  --tunnels "$tunnels" "${baseline_args[@]}" "${args[@]}"
