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
# TUNNELS_BENCH_NO_BUILD=1 skips the build; TUNNELS_BENCH_BIN=PATH uses that binary.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)

inside_world() {
  mount -t tmpfs -o mode=0755 tunnels-bench /run
  mkdir -p /run/netns /run/lock /run/tunnels-world/tmp
  ip link set lo up
  export TUNNELS_WORLD=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
  /usr/bin/python3 "$here/ssh_bench.py" "$@" && rc=0 || rc=$?
  exit "$rc"
}

if [[ "${1-}" == "--inside-world" ]]; then
  shift
  inside_world "$@"
fi

die() {
  echo "run-ssh-bench: $*" >&2
  exit 1
}

for arg in "$@"; do
  if [[ "$arg" == "-h" || "$arg" == "--help" ]]; then
    exec /usr/bin/python3 "$here/ssh_bench.py" --help
  fi
done

need=()
[[ -x /usr/sbin/sshd ]] || need+=(openssh-server)
command -v ssh >/dev/null || need+=(openssh-client)
command -v sshuttle >/dev/null || need+=(sshuttle)
command -v newuidmap >/dev/null || need+=(uidmap)
command -v wrk >/dev/null || need+=(wrk)
[[ -x /usr/sbin/nginx ]] || need+=(nginx-light)
command -v curl >/dev/null || need+=(curl)
[[ -x /usr/sbin/dnsmasq ]] || need+=(dnsmasq-base)
command -v dig >/dev/null || need+=(bind9-dnsutils)
command -v nft >/dev/null || need+=(nftables)
/usr/bin/python3 -c 'import pytest' 2>/dev/null || need+=(python3-pytest)
if ((${#need[@]})); then
  [[ $(id -u) == 0 ]] || die "missing packages: ${need[*]} (sudo apt-get install -y ${need[*]})"
  echo "run-ssh-bench: installing ${need[*]}" >&2
  policy=/usr/sbin/policy-rc.d
  made_policy=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && made_policy=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}" >&2 \
    || rc=$?
  ((made_policy)) && rm -f "$policy"
  [[ ${rc-0} == 0 ]] || die "installing ${need[*]} failed"
fi

if [[ "${TUNNELS_BENCH_NO_BUILD-}" != 1 ]]; then
  (cd "$root" &&
   cmake -S . -B build-bench -G Ninja -DCMAKE_BUILD_TYPE=Release -DTUNNELS_TESTS=OFF >&2 &&
   cmake --build build-bench --target tunnels -j2 >&2) || die "building tunnels failed"
fi
tunnels="${TUNNELS_BENCH_BIN:-$root/build-bench/launcher/tunnels}"
[[ -x "$tunnels" ]] || die "$tunnels not found (build it, or unset TUNNELS_BENCH_NO_BUILD)"

unshare_args=(--user --map-root-user --net --mount --propagation private
              --pid --fork --mount-proc --kill-child)
# sshd switches to its own user: the world needs the caller's subordinate ids.
range() {
  awk -F: -v name="$(id -un)" -v id="$(id -u)" \
    '($1 == name || $1 == id) && $3 > 1 { print $2, $3; exit }' "$1" 2>/dev/null
}
read -r uid_start uid_count < <(range /etc/subuid) || die "no range for $(id -un) in /etc/subuid"
read -r gid_start gid_count < <(range /etc/subgid) || die "no range for $(id -un) in /etc/subgid"
count=$(( uid_count < gid_count ? uid_count : gid_count ))
count=$(( count > 65535 ? 65535 : count ))
unshare_args+=(--map-users="$uid_start,1,$count" --map-groups="$gid_start,1,$count")
probe_err=$(unshare "${unshare_args[@]}" -- ip link set lo up 2>&1) \
  || die "cannot build the private world (user namespaces, newuidmap): $probe_err"

export TUNNELS_BENCH_ROOT="$root" TUNNELS_WORLD_IDS=$(( count + 1 ))
export TUNNELS_BENCH_COMMAND="bench/run-ssh-bench.sh${*:+ $*}"
exec unshare "${unshare_args[@]}" -- /bin/bash "${BASH_SOURCE[0]}" --inside-world \
  --tunnels "$tunnels" "$@"
