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
# TUNNELS_BENCH_NO_BUILD=1 skips the build (uses build-bench/launcher/tunnels
# as it is).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)

inside_world() {
  # Private /run: `ip netns add` needs a writable /run/netns; logs and the
  # served file live there (a tmpfs).
  mount -t tmpfs -o mode=0755 tunnels-bench /run
  mkdir -p /run/netns /run/lock /run/tunnels-world/tmp
  ip link set lo up
  export TUNNELS_WORLD=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
  # bash stays PID 1 (it reaps orphans); the bench is its child.
  /usr/bin/python3 "$here/engine_bench.py" "$@" && rc=0 || rc=$?
  exit "$rc"
}

if [[ "${1-}" == "--inside-world" ]]; then
  shift
  inside_world "$@"
fi

die() {
  echo "run-engine-bench: $*" >&2
  exit 1
}

for arg in "$@"; do
  if [[ "$arg" == "-h" || "$arg" == "--help" ]]; then
    exec /usr/bin/python3 "$here/engine_bench.py" --help
  fi
done

# Tools, installed only when missing, and only as root.
need=()
command -v redsocks >/dev/null || need+=(redsocks)
command -v wrk >/dev/null || need+=(wrk)
command -v danted >/dev/null || need+=(dante-server)
[[ -x /usr/sbin/nginx ]] || need+=(nginx-light)
command -v curl >/dev/null || need+=(curl)
[[ -x /usr/sbin/dnsmasq ]] || need+=(dnsmasq-base)
command -v dig >/dev/null || need+=(bind9-dnsutils)
command -v nft >/dev/null || need+=(nftables)
command -v ss >/dev/null || need+=(iproute2)
/usr/bin/python3 -c 'import pytest' 2>/dev/null || need+=(python3-pytest)  # world.py imports it
if ((${#need[@]})); then
  [[ $(id -u) == 0 ]] || die "missing packages: ${need[*]} (install them: sudo apt-get install -y ${need[*]})"
  echo "run-engine-bench: installing ${need[*]}" >&2
  # Daemons must not start on the real host: policy-rc.d refuses every
  # service start during the install (for hosts with an init system).
  policy=/usr/sbin/policy-rc.d
  made_policy=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && made_policy=1
  fi
  apt_install() {
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}" >&2
  }
  apt_install || { apt-get update >&2 && apt_install; } || rc=$?
  ((made_policy)) && rm -f "$policy"
  [[ ${rc-0} == 0 ]] || die "installing ${need[*]} failed"
  # The daemons just installed stay off on the real host (the bench runs its
  # own copies inside the world); services that were there before are left
  # as they were.
  for package in "${need[@]}"; do
    case $package in
      redsocks) service=redsocks ;;
      dante-server) service=danted ;;
      nginx-light) service=nginx ;;
      *) continue ;;
    esac
    if command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
      systemctl disable --now "$service" >/dev/null 2>&1 || true
    elif [[ -x /etc/init.d/$service ]]; then
      "/etc/init.d/$service" stop >/dev/null 2>&1 || true
      command -v update-rc.d >/dev/null && update-rc.d "$service" disable >/dev/null 2>&1 || true
    fi
  done
fi
for tool in unshare ip mount; do
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

unshare_args=(--user --map-root-user --net --mount --propagation private
              --pid --fork --mount-proc --kill-child)
probe_err=$(unshare "${unshare_args[@]}" -- ip link set lo up 2>&1) \
  || die "cannot build the private world (user namespaces): $probe_err"

export TUNNELS_BENCH_ROOT="$root"
export TUNNELS_BENCH_COMMAND="bench/run-engine-bench.sh${*:+ $*}"
exec unshare "${unshare_args[@]}" -- /bin/bash "${BASH_SOURCE[0]}" --inside-world \
  --tunnels "$tunnels" "$@"
