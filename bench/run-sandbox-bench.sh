#!/bin/bash
# bench/run-sandbox-bench.sh [--update-doc] [--starts N] [--downloads N]
#
# Start-up of `tunnels run` and throughput inside its sandbox (see
# docs/BENCHMARKS.md). Builds a Release tunnels in build-bench/, then runs
# bench/sandbox_bench.py in a private world of user, network, mount and PID
# namespaces; nothing touches the real host's network.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)

if [[ "${1-}" == "--inside-world" ]]; then
  shift
  mount -t tmpfs -o mode=0755 tunnels-bench /run
  mkdir -p /run/netns /run/lock /run/tunnels-world/tmp
  ip link set lo up
  export TUNNELS_WORLD=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
  /usr/bin/python3 "$here/sandbox_bench.py" --tunnels "${TUNNELS_BENCH_BIN:-$root/build-bench/launcher/tunnels}" "$@" \
    && rc=0 || rc=$?
  exit "$rc"
fi

if [[ -z ${TUNNELS_BENCH_NO_BUILD-} ]]; then
  cmake -S "$root" -B "$root/build-bench" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DTUNNELS_TESTS=OFF >/dev/null
  cmake --build "$root/build-bench" --target tunnels -j "$(nproc)"
fi
exec unshare --user --map-root-user --net --mount --propagation private --pid --fork \
  --mount-proc --kill-child -- "$here/run-sandbox-bench.sh" --inside-world "$@"
