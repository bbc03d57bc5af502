#!/bin/bash
# `cmake --install` into a DESTDIR: the binary, both man pages, the sample
# configuration, the systemd unit and the bash completion land where
# packagers and systemd expect them. Usage: install_test.sh BUILD_DIR
set -euo pipefail
build=$1
dest=$(mktemp -d)
trap 'rm -rf "$dest"' EXIT
DESTDIR=$dest cmake --install "$build" --prefix /usr >/dev/null
(cd "$dest" && find . -type f -o -type l | sort) > "$dest.list"
trap 'rm -rf "$dest" "$dest.list"' EXIT
status=0
for f in ./usr/bin/tunnels \
         ./usr/share/man/man1/tunnels.1 \
         ./usr/share/man/man5/tunnels.conf.5 \
         ./usr/share/tunnels/conf.d.sample/tunnels.yml \
         ./usr/lib/systemd/system/tunnels.service \
         ./usr/share/bash-completion/completions/tunnels; do
  if ! grep -qxF "$f" "$dest.list"; then
    echo "missing after cmake --install: ${f#.}"
    status=1
  fi
done
unit=$dest/usr/lib/systemd/system/tunnels.service
if [[ -f $unit ]]; then
  for line in 'ExecStart=/usr/bin/tunnels system /etc/tunnels' \
              'ExecStopPost=/usr/bin/tunnels cleanup /etc/tunnels' \
              'ExecReload=/bin/kill -HUP $MAINPID' \
              'ReadWritePaths=/etc /run/tunnels'; do
    grep -qxF "$line" "$unit" || { echo "the unit lacks: $line"; status=1; }
  done
  grep -q '^CapabilityBoundingSet=.*CAP_NET_ADMIN' "$unit" ||
    { echo "the unit's CapabilityBoundingSet lacks CAP_NET_ADMIN"; status=1; }
fi
completion=$dest/usr/share/bash-completion/completions/tunnels
if [[ -f $completion ]]; then
  bash -n "$completion" || { echo "the bash completion does not parse"; status=1; }
fi
[[ $status == 0 ]] && echo "installed: $(wc -l < "$dest.list") files"
exit $status
