#!/bin/sh
# Fails on any warning mandoc or groff has for the man pages given, so that
# a page that renders broken does not reach a release.
set -u
command -v mandoc >/dev/null || { echo "mandoc is missing (tests/packages.txt)"; exit 1; }
status=0
for page in "$@"; do
  out=$(mandoc -Tlint -Wwarning "$page" 2>&1; LC_ALL=C groff -ww -z -man "$page" 2>&1)
  if [ -n "$out" ]; then
    printf '%s\n' "$out"
    status=1
  fi
done
exit $status
