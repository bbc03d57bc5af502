"""What a program in `tunnels run` cannot do to the one who started it.

- It cannot type into the caller's terminal (TIOCSTI, TIOCLINUX), yet an
  interactive shell in the sandbox keeps job control.
- Under sudo, --user names only the invoking user, files are read with that
  user's rights, and the environment is reset as `sudo -u` resets it.

One world for the whole file: host "outer", where tunnels runs (as root of
the world), with no peers: the program only talks to its terminal."""

from __future__ import annotations

import fcntl
import os
import subprocess
import termios
from pathlib import Path

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

    def readable_config(self):
        """The configuration where any user of the world can read it."""
        d = Path("/run/sandboxsec-conf")
        d.mkdir(mode=0o755, exist_ok=True)
        conf = d / "tunnels.yml"
        conf.write_text(CONFIG)
        conf.chmod(0o644)
        return conf

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


# --- under sudo -------------------------------------------------------------
# sudo sets SUDO_UID and SUDO_GID for the program it starts as root; root of
# the world setting them is what tunnels sees under `sudo tunnels run`.

def as_sudo_from(uid: int) -> dict:
    return {"SUDO_UID": str(uid), "SUDO_GID": str(uid), "SUDO_USER": "nobody",
            "HOME": "/root", "USER": "root", "LOGNAME": "root"}


def test_under_sudo_user_may_name_only_the_invoking_user(sw):
    need_ids()
    r = sw.outer.run(sw.argv("id", "-u", extra=("--user", "root")), check=False,
                     env=as_sudo_from(NOBODY))
    assert r.returncode == 125, r.stdout
    assert "--user root: the program may run only as the user who ran sudo" in r.stderr
    # The invoking user itself is fine, by name.
    readable = sw.readable_config()
    r = sw.outer.run([sw.bin, "run", "-c", str(readable), "--user", "nobody", "--", "id", "-u"],
                     check=False, env=as_sudo_from(NOBODY))
    assert (r.returncode, r.stdout) == (0, f"{NOBODY}\n"), r.stderr


def test_root_itself_cannot_start_a_program_as_root_with_user(sw):
    r = sw.outer.run(sw.argv("id", "-u", extra=("--user", "root")), check=False)
    assert r.returncode == 125
    assert "refusing to start the program as root" in r.stderr


def test_under_sudo_files_are_read_with_the_users_rights(sw):
    need_ids()
    secret = sw.world.tmp_path / "shadow-like"
    secret.write_text("root:SECRET-HASH-LINE:19000:0:99999:7:::\n")
    secret.chmod(0o600)
    r = sw.outer.run(sw.argv("true")[:3] + [str(secret), "--", "true"], check=False,
                     env=as_sudo_from(NOBODY))
    assert r.returncode == 125
    assert "Permission denied" in r.stderr, r.stderr
    assert "SECRET-HASH-LINE" not in r.stderr + r.stdout
    # Root itself reads it (and rejects it as a configuration, quoting it).
    r = sw.outer.run(sw.argv("true")[:3] + [str(secret), "--", "true"], check=False)
    assert r.returncode == 125


def test_under_sudo_the_environment_is_reset(sw):
    need_ids()
    env = {**as_sudo_from(NOBODY), "LD_PRELOAD": "", "BASH_ENV": "/nonexistent",
           "TUNNELS_TEST_SECRET": "x", "DISPLAY": ":3", "LC_ALL": "C", "PATH": "/root/bin:" +
           os.environ.get("PATH", "/usr/bin:/bin")}
    r = sw.outer.run([sw.bin, "run", "-c", str(sw.readable_config()), "--", "/usr/bin/env"],
                     check=False, env=env)
    assert r.returncode == 0, r.stderr
    got = dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)
    assert "TUNNELS_TEST_SECRET" not in got and "BASH_ENV" not in got
    assert "LD_PRELOAD" not in got
    assert got["DISPLAY"] == ":3" and got["LC_ALL"] == "C"
    assert got["USER"] == "nobody" and "/root" not in got["PATH"]


def test_under_sudo_check_does_not_quote_files_the_user_cannot_read(sw):
    need_ids()
    secret = sw.world.tmp_path / "secret.yml"
    secret.write_text("rules: {SECRET-VALUE-LINE: [nope]}\n")
    secret.chmod(0o600)
    r = sw.outer.run([sw.bin, "check", str(secret)], check=False, env=as_sudo_from(NOBODY))
    assert r.returncode == 1
    assert "Permission denied" in r.stderr, r.stderr
    assert "SECRET-VALUE-LINE" not in r.stderr + r.stdout
