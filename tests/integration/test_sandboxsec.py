"""What a program in `tunnels run` cannot do to the one who started it.

- It cannot type into the caller's terminal (TIOCSTI, TIOCLINUX), yet an
  interactive shell in the sandbox keeps job control.

One world for the whole file: host "outer", where tunnels runs (as root of
the world), with no peers: the program only talks to its terminal."""

from __future__ import annotations

import fcntl
import os
import subprocess
import termios

import pytest

import world as w

NOBODY = 65534  # in every Debian's /etc/passwd, hence in the world's

CONFIG = """
proxies:
  p: {type: socks5, address: 10.0.0.1:1080}
rules:
  .ruled.test: p
"""

# Run inside the sandbox, with the pty as its terminal: pushes a command
# into the terminal's input (plain, and with the upper half of the 64-bit
# request set, which the kernel ignores), then takes the foreground as a
# job-control shell does.
PROGRAM = r"""
import fcntl, os, signal, termios
for name, request in (("plain", termios.TIOCSTI), ("high", termios.TIOCSTI | 1 << 32)):
    try:
        for c in b"echo INJECTED-" + name.encode() + b"\n":
            fcntl.ioctl(0, request, bytes([c]))
        print("tiocsti", name, "pushed")
    except OSError as e:
        print("tiocsti", name, "errno", e.errno)
signal.signal(signal.SIGTTOU, signal.SIG_IGN)
os.setpgid(0, 0)
os.tcsetpgrp(0, os.getpgrp())
print("foreground", os.tcgetpgrp(0) == os.getpgrp())
"""


class SecWorld:
    def __init__(self, world, tunnels_bin):
        self.world = world
        self.bin = str(tunnels_bin)
        self.outer = world.host("outer")
        self.conf = world.tmp_path / "tunnels.yml"
        self.conf.write_text(CONFIG)

    def argv(self, *command, extra=()):
        return [self.bin, "run", "-c", str(self.conf), *extra, "--", *command]

    def run_on_pty(self, *command, extra=()):
        """Runs tunnels with a new pty as its controlling terminal (as a
        shell would); returns (CompletedProcess, what is left in the
        terminal's input after tunnels has ended: what the shell would read)."""
        master, slave = os.openpty()
        try:
            r = subprocess.run(
                self.outer._wrap(self.argv(*command, extra=extra)), stdin=slave,
                capture_output=True, text=True, timeout=30, start_new_session=True,
                preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
            os.set_blocking(slave, False)
            try:
                pending = os.read(slave, 4096)
            except BlockingIOError:
                pending = b""
            return r, pending
        finally:
            os.close(master)
            os.close(slave)


@pytest.fixture(scope="module")
def sw(tmp_path_factory):
    if not w.in_world():
        w.missing("not inside run-in-world")
    value = os.environ.get("TUNNELS_BIN")
    if not value or not os.access(value, os.X_OK):
        w.missing("TUNNELS_BIN is not set to an executable (run through ctest, or export it)")
    wd = w.World(tmp_path_factory.mktemp("sandboxsec"))
    try:
        yield SecWorld(wd, value)
    finally:
        wd.close()


def need_ids():
    if int(os.environ.get("TUNNELS_WORLD_IDS", "1")) <= NOBODY:
        w.missing("the world maps no id but root (run-in-world needs the caller's /etc/subuid "
                  "and /etc/subgid ranges and newuidmap/newgidmap, package uidmap)")


@pytest.mark.parametrize("user", ["caller", "nobody"])
def test_program_cannot_type_into_the_callers_terminal(sw, user):
    extra = ()
    if user == "nobody":
        need_ids()
        extra = ("--user", "nobody")
    r, pending = sw.run_on_pty("/usr/bin/python3", "-c", PROGRAM, extra=extra)
    assert r.returncode == 0, r.stderr
    assert pending == b"", f"the program typed {pending!r} into the caller's terminal"
    lines = r.stdout.splitlines()
    assert lines[:2] == ["tiocsti plain errno 1", "tiocsti high errno 1"], r.stdout
    # Job control still works: the program took the terminal's foreground.
    assert lines[2] == "foreground True", r.stdout


def test_interactive_shell_keeps_job_control(sw):
    r, _ = sw.run_on_pty("bash", "--norc", "-i", "-c",
                         "set -m; sleep 0.1 & jobs; wait; echo monitor=${-//[^m]/}")
    assert r.returncode == 0, r.stderr
    assert "no job control" not in r.stderr, r.stderr
    assert "monitor=m" in r.stdout, (r.stdout, r.stderr)
