# bench/lib.sh: what every bench/run-*-bench.sh does, sourced by them.
#
# A run script sets `bench_name` (engine, dns, ssh) and `bench_script`
# (engine_bench.py, ...), then, in order:
#   bench_start "$@"            the world's side, when called back into it
#   bench_need CHECK PACKAGE    for each tool (CHECK: a command or a path)
#   bench_install               installs what is missing (root only)
#   bench_build                 a Release tunnels in build-bench/ ($bench_tunnels)
#   bench_enter_world ARGS...   runs $bench_script ARGS inside a private world:
#                               new user, network, mount and PID namespaces, as
#                               tests/integration/run-in-world builds them.
# Every packet stays inside the world's namespaces; no rule or route is added
# outside it, and every process started in the world dies with it.
#
# TUNNELS_BENCH_NO_BUILD=1 skips the build; TUNNELS_BENCH_BIN=PATH measures
# that binary instead of build-bench's.

bench_here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bench_root=$(cd "$bench_here/.." && pwd)
# The benches import the test suite's world and peers
# (tests/integration/world.py, peers.py, sites.py) and their shared module
# bench/benchlib.py from here, and nothing else: one copy of each peer
# serves the tests and the benches, and no bench imports another.
export PYTHONPATH="$bench_root/tests/integration:$bench_here${PYTHONPATH:+:$PYTHONPATH}"
bench_packages=()
bench_unshare_args=(--user --map-root-user --net --mount --propagation private
                    --pid --fork --mount-proc --kill-child)

bench_die() {
  echo "run-$bench_name-bench: $*" >&2
  exit 1
}

# Inside the world (the script calls itself back with --inside-world): a
# private /run, since `ip netns add` needs a writable /run/netns, and logs and
# served files live there (a tmpfs). bash stays PID 1, reaping orphans; the
# bench is its child. Otherwise: --help goes straight to the Python bench.
bench_start() {
  if [[ "${1-}" == "--inside-world" ]]; then
    shift
    mount -t tmpfs -o mode=0755 tunnels-bench /run
    mkdir -p /run/netns /run/lock /run/tunnels-world/tmp
    ip link set lo up
    export TUNNELS_WORLD=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
    /usr/bin/python3 "$bench_here/$bench_script" "$@" && rc=0 || rc=$?
    exit "$rc"
  fi
  for arg in "$@"; do
    if [[ "$arg" == "-h" || "$arg" == "--help" ]]; then
      exec /usr/bin/python3 "$bench_here/$bench_script" --help
    fi
  done
}

# bench_need CHECK PACKAGE: PACKAGE is needed unless CHECK (a path, or a
# command on PATH) is there.
bench_need() {
  if [[ "$1" == /* ]]; then
    [[ -x "$1" ]] && return 0
  else
    command -v "$1" >/dev/null && return 0
  fi
  bench_packages+=("$2")
}

# Installs the packages bench_need found missing, as root only. Daemons must
# not start on the real host: policy-rc.d refuses every service start during
# the install, and the ones just installed are disabled afterwards (the
# bench runs its own copies inside the world); services that were there
# before are left as they were.
bench_install() {
  /usr/bin/python3 -c 'import pytest' 2>/dev/null || bench_packages+=(python3-pytest)  # world.py
  for tool in unshare ip mount; do
    command -v "$tool" >/dev/null || bench_packages+=(util-linux iproute2)
  done
  ((${#bench_packages[@]})) || return 0
  [[ $(id -u) == 0 ]] ||
    bench_die "missing packages: ${bench_packages[*]} (sudo apt-get install -y ${bench_packages[*]})"
  echo "run-$bench_name-bench: installing ${bench_packages[*]}" >&2
  local policy=/usr/sbin/policy-rc.d made_policy=0 rc=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && made_policy=1
  fi
  apt_install() {
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      "${bench_packages[@]}" >&2
  }
  apt_install || { apt-get update >&2 && apt_install; } || rc=$?
  ((made_policy)) && rm -f "$policy"
  ((rc == 0)) || bench_die "installing ${bench_packages[*]} failed"
  local package service
  for package in "${bench_packages[@]}"; do
    case $package in
      redsocks) service=redsocks ;;
      dante-server) service=danted ;;
      nginx-light) service=nginx ;;
      openssh-server) service=ssh ;;
      *) continue ;;
    esac
    if command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
      systemctl disable --now "$service" >/dev/null 2>&1 || true
    elif [[ -x /etc/init.d/$service ]]; then
      "/etc/init.d/$service" stop >/dev/null 2>&1 || true
      command -v update-rc.d >/dev/null && update-rc.d "$service" disable >/dev/null 2>&1 || true
    fi
  done
}

# A Release build, the same settings for every benchmark in bench/; sets
# bench_tunnels.
bench_build() {
  if [[ "${TUNNELS_BENCH_NO_BUILD-}" != 1 && -z "${TUNNELS_BENCH_BIN-}" ]]; then
    (cd "$bench_root" &&
     cmake -S . -B build-bench -G Ninja -DCMAKE_BUILD_TYPE=Release -DTUNNELS_TESTS=OFF >&2 &&
     cmake --build build-bench --target tunnels -j2 >&2) || bench_die "building tunnels failed"
  fi
  bench_tunnels="${TUNNELS_BENCH_BIN:-$bench_root/build-bench/launcher/tunnels}"
  [[ -x "$bench_tunnels" ]] ||
    bench_die "$bench_tunnels not found (build it, or unset TUNNELS_BENCH_NO_BUILD)"
}

# Maps the caller's subordinate ids into the world as well, for programs that
# switch users (sshd's privilege separation).
bench_map_subordinate_ids() {
  command -v newuidmap >/dev/null || bench_die "newuidmap not found (package uidmap)"
  range() {
    awk -F: -v name="$(id -un)" -v id="$(id -u)" \
      '($1 == name || $1 == id) && $3 > 1 { print $2, $3; exit }' "$1" 2>/dev/null
  }
  local uid_start uid_count gid_start gid_count count
  read -r uid_start uid_count < <(range /etc/subuid) ||
    bench_die "no range for $(id -un) in /etc/subuid"
  read -r gid_start gid_count < <(range /etc/subgid) ||
    bench_die "no range for $(id -un) in /etc/subgid"
  count=$((uid_count < gid_count ? uid_count : gid_count))
  count=$((count > 65535 ? 65535 : count))
  bench_unshare_args+=(--map-users="$uid_start,1,$count" --map-groups="$gid_start,1,$count")
  export TUNNELS_WORLD_IDS=$((count + 1))
}

# bench_enter_world COMMAND_LINE ARGS...: COMMAND_LINE is how the caller was
# invoked (for the report); ARGS go to the Python bench, after --tunnels.
bench_enter_world() {
  local command_line=$1
  shift
  local probe_err
  probe_err=$(unshare "${bench_unshare_args[@]}" -- ip link set lo up 2>&1) ||
    bench_die "cannot build the private world (user namespaces): $probe_err"
  export TUNNELS_BENCH_ROOT="$bench_root" TUNNELS_BENCH_COMMAND="$command_line"
  exec unshare "${bench_unshare_args[@]}" -- /bin/bash "$0" --inside-world \
    --tunnels "$bench_tunnels" "$@"
}
