"""tunnels under a real sudo, and the engine's limits (issue 15, items 2, 5
and 8).

- A sudoers rule lets the world's `nobody` run tunnels as root through the
  real sudo: `--user root` is refused, root-only files given as the
  configuration of check, explain, system (at start and at SIGHUP) and
  cleanup are read with nobody's rights and never quoted, and the program of
  `tunnels run` gets the environment `sudo -u` would give it.
- A `forcedAddress` inside the fake range (which the user may write) makes
  one outbound attempt that fails, not connections nested until the
  descriptors run out: the engine's sockets carry a mark that the
  interception skips.
- maxConnectionsPerSource refuses one source's connections beyond the cap
  with one log line, while another source and DNS go on.

sudo must be setuid root and trusts only files owned by uid 0, which the
host's are not in the world when the suite runs as an ordinary user: the
world's root copies sudo (setuid, its own), the sudoers plugin and a
sudoers file into /run/sudo-world and binds the sudoers file and a
sudo.conf naming that plugin over /etc/sudoers and /etc/sudo.conf, in the
world's private mount namespace. This needs a world that maps more ids
than root (the caller's /etc/subuid range).

One world for the file: host "client" (tunnels, 10.0.0.2 and 10.0.0.3)
linked to host "srv" (dnsmasq answering *.test with 10.0.0.1, nginx)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import world as w
from sites import HELLO, TwoHosts
from world import dig, wait_for_log

NOBODY = 65534  # in every Debian's /etc/passwd, hence in the world's
SUDO_DIR = Path("/run/sudo-world")
SECRET = "SECRET-VALUE-LINE"

SYSTEM_CONFIG = """
upstreamDns: 10.0.0.1
dnsBindAddress: 127.0.0.1
dnsPort: 53
overwriteResolvconf: false
{options}
rules:
  .via-direct.test: direct
{rules}
"""

# Opens argv[3] connections from source address argv[4] to argv[1]:argv[2],
# prints "held", and keeps them open (idle) until killed.
HOLDER = r"""
import socket, sys, time
held = []
for _ in range(int(sys.argv[3])):
    held.append(socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5,
                                         source_address=(sys.argv[4], 0)))
print("held", flush=True)
while True:
    time.sleep(3600)
"""


def install_sudo(tunnels_bin: str) -> Path:
    """A working sudo for the world, allowing nobody to run tunnels as root;
    returns its path."""
    real = shutil.which("sudo")
    plugin = Path("/usr/libexec/sudo/sudoers.so")
    if real is None or not plugin.exists():
        w.missing("sudo not found (package sudo)")
    SUDO_DIR.mkdir(mode=0o755)
    sudo = SUDO_DIR / "sudo"
    shutil.copy(real, sudo)
    sudo.chmod(0o4755)
    shutil.copy(plugin, SUDO_DIR / "sudoers.so")
    (SUDO_DIR / "sudoers.so").chmod(0o644)
    sudoers = SUDO_DIR / "sudoers"
    # PAM's account and session modules would read /etc/shadow, which the
    # world's root cannot when it is an ordinary user outside. DISPLAY is
    # kept as desktop sudoers files keep it; the sanitizers' options as the
    # CI run sets them.
    sudoers.write_text(
        "Defaults env_reset, !lecture, !syslog, !pam_acct_mgmt, !pam_session, !pam_setcred\n"
        'Defaults env_keep += "DISPLAY ASAN_OPTIONS UBSAN_OPTIONS LSAN_OPTIONS"\n'
        f"nobody ALL=(root) NOPASSWD: {tunnels_bin}\n")
    sudoers.chmod(0o440)
    conf = SUDO_DIR / "sudo.conf"
    conf.write_text(f"Plugin sudoers_policy {SUDO_DIR}/sudoers.so\n"
                    f"Plugin sudoers_io {SUDO_DIR}/sudoers.so\n")
    conf.chmod(0o644)
    for source, target in ((conf, "/etc/sudo.conf"), (sudoers, "/etc/sudoers")):
        subprocess.run(["mount", "--bind", str(source), target], check=True)
    return sudo


class SudoWorld(TwoHosts):
    def __init__(self, world, tunnels_bin):
        super().__init__(world)
        self.bin = str(tunnels_bin)
        # A second address for the client: a second source.
        self.client.run(["ip", "addr", "add", "10.0.0.3/24", "dev", self._ifname()])
        self.sudo = str(install_sudo(self.bin))
        self.secret = SUDO_DIR / "secret.yml"
        self.secret.write_text(f"rules: {{{SECRET}: [nope]}}\n")
        self.secret.chmod(0o600)
        self.conf_dir = SUDO_DIR / "conf"
        self.conf_dir.mkdir(mode=0o755)

    def _ifname(self) -> str:
        out = self.client.run(["ip", "-o", "-4", "addr", "show", "to", "10.0.0.2"]).stdout
        return out.split()[1]

    def as_nobody(self, *args, cwd="/") -> list[str]:
        """`sudo -n tunnels ARGS` run by nobody, from `cwd`."""
        return ["env", "-C", str(cwd), "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}",
                "--clear-groups", self.sudo, "-n", self.bin, *args]

    def sudo_run(self, *args, env=None):
        return self.client.run(self.as_nobody(*args), check=False, env=env, timeout=60)

    def config(self, name: str, options: str = "", rules: str = "", mode: int = 0o644) -> Path:
        path = self.conf_dir / name
        path.write_text(SYSTEM_CONFIG.format(options=options, rules=rules))
        path.chmod(mode)
        return path

    def system(self, conf: Path, under_sudo: bool = False) -> w.Proc:
        argv = [self.bin, "system", "-v", str(conf)]
        t = self.client.spawn(self.as_nobody(*argv[1:]) if under_sudo else argv,
                              name="tunnels", line_buffered=False)
        wait_for_log(t, r"\[DNS\] listening on udp 127\.0\.0\.1:53")
        return t


@pytest.fixture(scope="module")
def sw(tmp_path_factory):
    if not w.in_world():
        w.missing("not inside run-in-world")
    value = os.environ.get("TUNNELS_BIN")
    if not value or not os.access(value, os.X_OK):
        w.missing("TUNNELS_BIN is not set to an executable (run through ctest, or export it)")
    if int(os.environ.get("TUNNELS_WORLD_IDS", "1")) <= NOBODY:
        w.missing("the world maps no id but root (run-in-world needs the caller's /etc/subuid "
                  "and /etc/subgid ranges and newuidmap/newgidmap, package uidmap)")
    wd = w.World(tmp_path_factory.mktemp("sudo"))
    try:
        s = SudoWorld(wd, value)
        s.client.use_nameserver("127.0.0.1")
        yield s
    finally:
        wd.close()
        for target in ("/etc/sudoers", "/etc/sudo.conf"):
            subprocess.run(["umount", target], capture_output=True)


@pytest.fixture
def stopped(sw):
    """Stops every tunnels the test started: the next one takes port 53."""
    first = len(sw.world.procs)
    yield
    for p in sw.world.procs[first:]:
        p.stop()


# --- item 2: a sudoers rule for tunnels ---------------------------------------

def test_real_sudo_works_in_the_world(sw):
    r = sw.client.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                       sw.sudo, "-n", "-l"], check=False)
    assert r.returncode == 0 and sw.bin in r.stdout, r.stderr


def test_sudo_run_refuses_user_root(sw):
    r = sw.sudo_run("run", "-c", str(sw.config("run.yml")), "--user", "root", "--", "id", "-u")
    assert r.returncode == 125, (r.stdout, r.stderr)
    assert "--user root: the program may run only as the user who ran sudo" in r.stderr
    assert r.stdout == ""


def test_sudo_run_program_is_the_invoker_with_a_reset_environment(sw):
    env = {"DISPLAY": ":3", "TUNNELS_TEST_SECRET": "x", "LD_LIBRARY_PATH": "/tmp"}
    r = sw.sudo_run("run", "-c", str(sw.config("run.yml")), "--", "/usr/bin/env", env=env)
    assert r.returncode == 0, r.stderr
    got = dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)
    assert (got["USER"], got["LOGNAME"], got["HOME"]) == ("nobody", "nobody", "/nonexistent")
    assert got["DISPLAY"] == ":3"
    assert "TUNNELS_TEST_SECRET" not in got and "LD_LIBRARY_PATH" not in got
    assert "MAIL" not in got and "SUDO_COMMAND" not in got
    assert got["PATH"] == "/usr/local/bin:/usr/bin:/bin:/usr/local/games:/usr/games"
    r = sw.sudo_run("run", "-c", str(sw.config("run.yml")), "--", "id", "-u")
    assert (r.returncode, r.stdout) == (0, f"{NOBODY}\n"), r.stderr


def test_a_rule_for_run_alone_does_not_start_system_mode(sw, stopped):
    """sudo matches `run *` against the arguments joined by spaces, so one
    argument 'run x' passes it; tunnels must not take it for the original's
    `tunnels CONF...`, which is system mode."""
    sudoers = SUDO_DIR / "sudoers"
    saved = sudoers.read_text()
    conf = SUDO_DIR / "run x"
    conf.mkdir(mode=0o755)
    (conf / "tunnels.yml").write_text(SYSTEM_CONFIG.format(options="", rules=""))
    (conf / "tunnels.yml").chmod(0o644)
    try:
        # Written in place: the bind mount over /etc/sudoers shows this inode.
        with open(sudoers, "w") as f:
            f.write(saved.replace(f"NOPASSWD: {sw.bin}\n", f"NOPASSWD: {sw.bin} run *\n"))
        assert sw.sudo_run("system", str(conf)).returncode == 1  # sudo refuses it
        r = sw.client.run(sw.as_nobody("run x", cwd=SUDO_DIR), check=False, timeout=30)
        assert r.returncode == 2, (r.stdout, r.stderr)
        assert "under sudo, name the command" in r.stderr
        assert "listening" not in r.stdout + r.stderr
    finally:
        with open(sudoers, "w") as f:
            f.write(saved)


@pytest.mark.parametrize("command", [["check"], ["explain", "--to", "a.test"], ["cleanup"],
                                     ["system"]])
def test_sudo_does_not_read_root_only_configuration(sw, command, stopped):
    r = sw.sudo_run(*command, str(sw.secret))
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "Permission denied" in r.stderr, r.stderr
    assert SECRET not in r.stdout + r.stderr
    # Root itself reads it, and rejects it quoting it: the secret is there.
    r = sw.client.run([sw.bin, "check", str(sw.secret)], check=False)
    assert r.returncode == 1 and SECRET in r.stderr, r.stderr


def test_sudo_system_reload_reads_as_the_invoker(sw, stopped):
    conf = sw.config("system.yml")
    t = sw.system(conf, under_sudo=True)
    # The new configuration only root can read: refused, and not quoted.
    conf.write_text(SYSTEM_CONFIG.format(options="", rules=f"  {SECRET}.test: [nope]\n"))
    conf.chmod(0o600)
    since = t.mark()
    t.signal(signal.SIGHUP)
    wait_for_log(t, r"the new configuration has errors and was not applied", since=since)
    assert "Permission denied" in t.output()[since:]
    assert SECRET not in t.output()
    # Readable by nobody: applied. DNS and the engine (whose sockets need
    # root's CAP_NET_ADMIN for their mark) kept working throughout.
    conf.write_text(SYSTEM_CONFIG.format(options="", rules="  .more.test: direct\n"))
    conf.chmod(0o644)
    since = t.mark()
    t.signal(signal.SIGHUP)
    wait_for_log(t, r"reloaded: 2 rules", since=since)
    assert dig(sw.client, "127.0.0.1", "other.test").addresses == ["10.0.0.1"]
    assert sw.curl("http://x.more.test/").stdout == HELLO


# --- item 5: the engine never connects to itself --------------------------------

def test_forced_address_in_the_fake_range_does_not_loop_in_system_mode(sw, stopped):
    """The name's forcedAddress is its own fake address: without the mark,
    each outbound connection would be intercepted and carried again."""
    conf = sw.config("loop.yml", rules="  loop.test: direct\n")
    t = sw.system(conf)
    fake = dig(sw.client, "127.0.0.1", "loop.test").addresses[0]
    assert fake.startswith("198.1")
    conf.write_text(SYSTEM_CONFIG.format(
        options="", rules=f"  loop.test: {{proxy: direct, forcedAddress: {fake}}}\n"))
    since = t.mark()
    t.signal(signal.SIGHUP)
    wait_for_log(t, r"reloaded", since=since)
    r = sw.curl("http://loop.test/", check=False, timeout=20)
    assert r.returncode != 0 and HELLO not in r.stdout
    line = wait_for_log(t, r"cannot connect .*loop\.test.*", since=since).group(0)
    assert "refused" in line, line
    log = t.output()[since:]
    assert log.count("[ENGINE] cannot connect") == 1, log
    # Still serving.
    assert sw.curl("http://x.via-direct.test/").stdout == HELLO


def test_forced_address_in_the_fake_range_does_not_loop_in_run(sw):
    conf = sw.config("run-loop.yml", rules="  loop.test: {proxy: direct, "
                                           "forcedAddress: 198.18.0.1}\n")
    r = sw.client.run([sw.bin, "run", "-c", str(conf), "--", "curl", "-sS", "--max-time", "10",
                       "http://loop.test/"], check=False, timeout=30)
    assert r.returncode != 0 and HELLO not in r.stdout
    assert r.stderr.count("[ENGINE] cannot connect") == 1, r.stderr
    assert "loop.test" in r.stderr


# --- item 8: the per-source cap -------------------------------------------------

def test_per_source_cap_refuses_only_that_source(sw, stopped):
    t = sw.system(sw.config("cap.yml", options="maxConnectionsPerSource: 3"))
    fake = dig(sw.client, "127.0.0.1", "held.via-direct.test").addresses[0]
    holder = sw.client.spawn([sys.executable, "-c", HOLDER, fake, "80", "3", "10.0.0.2"],
                             name="holder")
    wait_for_log(holder, r"^held")
    # The fourth from 10.0.0.2 is refused, with one line naming it.
    r = sw.curl("http://held.via-direct.test/", "--interface", "10.0.0.2", check=False,
                timeout=20)
    assert r.returncode != 0 and HELLO not in r.stdout
    wait_for_log(t, r"refusing new connections: .* 3 from 10\.0\.0\.2 "
                    r"\(maxConnectionsPerSource 3\)")
    # Another source gets through; DNS forwarding goes on.
    assert sw.curl("http://held.via-direct.test/", "--interface", "10.0.0.3").stdout == HELLO
    r = dig(sw.client, "127.0.0.1", "other.test")
    assert r.status == "NOERROR" and r.addresses == ["10.0.0.1"], r.output
    r = sw.curl("http://held.via-direct.test/", "--interface", "10.0.0.2", check=False,
                timeout=20)
    assert r.returncode != 0
    assert t.output().count("refusing new connections") == 1, t.output()
    holder.stop()
