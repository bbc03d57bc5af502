"""The life of an ssh proxy's session across a reload, a slow channel open and
a stop, against OpenSSH's sshd in one private world shared by the tests.

Host "srv" (10.0.0.1): dnsmasq (every *.test name is 10.0.0.1), nginx on :80,
sshd on :22, small Python servers. Host "client" (10.0.0.2): tunnels system
as the client's resolver; each test starts its own and stops it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

import world as w
from peers import Sshd, wait_for_port
from scripts import ECHO_FOREVER_SERVER
from sites import SYSTEM_CONFIG, TwoHosts
from world import require, wait_for_log, wait_until


class Site(TwoHosts):
    def __init__(self, world, tunnels_bin: Path):
        super().__init__(world)
        self.tunnels_bin = tunnels_bin
        keygen = require("ssh-keygen", "openssh-client")
        self.key = world.tmp_path / "client_ed25519"
        host_key = world.tmp_path / "host_ed25519"
        for path in (self.key, host_key):
            subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
                           check=True, capture_output=True)
        out = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", f"{host_key}.pub"],
                             check=True, capture_output=True, text=True).stdout
        self.pin = out.split()[1]
        self.sshd = Sshd(self.srv, "10.0.0.1", 22, [host_key],
                         Path(f"{self.key}.pub").read_text())
        self.echo = self.srv.spawn(["python3", "-c", ECHO_FOREVER_SERVER, "10.0.0.1", "9000"],
                                   name="echo")
        wait_for_port(self.srv, "10.0.0.1", 9000, "echo server", self.echo)
        self.conf = world.tmp_path / "tunnels.yml"

    def config(self, with_ssh: bool = True) -> str:
        proxies = ("proxies:\n  vps:\n    type: ssh\n    address: 10.0.0.1:22\n"
                   f"    username: root\n    privateKey: {self.key}\n"
                   f"    ed25519Fingerprint: \"{self.pin}\"\n    keepaliveInterval: 1\n"
                   if with_ssh else "")
        rules = "  .vps.test: vps\n" if with_ssh else ""
        return SYSTEM_CONFIG + proxies + "rules:\n" + rules + "  .direct.test: direct\n"

    def write_conf(self, with_ssh: bool = True) -> None:
        self.conf.write_text(self.config(with_ssh))

    def start_tunnels(self) -> w.Proc:
        # start_system writes the configuration to self.conf.
        return self.start_system(self.tunnels_bin, self.config(), verbosity="-vv")

    def ssh_connections(self) -> int:
        """TCP connections established to sshd: one per ssh session."""
        out = self.srv.run(["ss", "-Htn", "state", "established", "( sport = :22 )"]).stdout
        return len(out.splitlines())


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    value = os.environ.get("TUNNELS_BIN")
    if not value or not os.access(value, os.X_OK):
        w.missing(f"TUNNELS_BIN={value} is not an executable file (build it first)")
    wd = w.World(tmp_path_factory.mktemp("world"))
    try:
        yield Site(wd, Path(value))
    finally:
        wd.close()


@pytest.fixture
def tunnels(site, request):
    request.node._tunnels_world = site.world  # for the failure report
    proc = site.start_tunnels()
    yield proc
    proc.stop(timeout=15)
    assert "Sanitizer" not in proc.output()


# Connects to argv[1]:argv[2] and has one byte echoed; prints "open". Then,
# at each SIGUSR1, has one more byte echoed and prints "echoed" (SIGUSR2:
# closes and prints "closed"). Prints how the connection ended if the other
# side ends it: "eof" or "reset".
HELD_CLIENT = r"""
import signal, socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)
c.sendall(b"x"); assert c.recv(1) == b"x"
print("open", flush=True)
while True:
    sig = signal.sigwait([signal.SIGUSR1, signal.SIGUSR2])
    if sig == signal.SIGUSR2:
        c.close(); print("closed", flush=True); break
    try:
        c.sendall(b"y"); data = c.recv(1)
    except ConnectionResetError:
        print("reset", flush=True); break
    if data == b"":
        print("eof", flush=True); break
    print("echoed", flush=True)
"""


def held_client(site, host: str, port: int, name: str) -> w.Proc:
    # SIGUSR1 and SIGUSR2 blocked before Python starts, for sigwait.
    proc = site.client.spawn(["python3", "-c", "import signal; signal.pthread_sigmask("
                              "signal.SIG_BLOCK, [signal.SIGUSR1, signal.SIGUSR2]); "
                              f"exec(compile({HELD_CLIENT!r}, 'held', 'exec'))", host, str(port)],
                             name=name)
    wait_for_log(proc, "^open$", timeout=15)
    return proc


def test_a_reload_retires_the_old_session_once_its_last_channel_ends(site, tunnels):
    # A long direct connection keeps the old configuration generation alive
    # across the reload, and with it its ssh session: that session must
    # serve its own connection to the end, then close, and neither send
    # keepalives nor reconnect for a proxy the configuration no longer has.
    accepted = site.sshd.log().count("Accepted publickey")
    direct = held_client(site, "echo.direct.test", 9000, "direct")
    over_ssh = held_client(site, "echo.vps.test", 9000, "over-ssh")
    assert site.ssh_connections() == 1
    mark = tunnels.mark()
    site.write_conf(with_ssh=False)
    tunnels.signal(signal.SIGHUP)
    wait_for_log(tunnels, r"\[CONFIG\] reloaded", since=mark)
    # The connection over the old session still works...
    over_ssh.signal(signal.SIGUSR1)
    wait_for_log(over_ssh, "^echoed$")
    assert site.ssh_connections() == 1
    # ...and once it ends, so does the session: sshd sees it go.
    over_ssh.signal(signal.SIGUSR2)
    wait_for_log(over_ssh, "^closed$")
    wait_until(lambda: site.ssh_connections() == 0, timeout=5,
               what="the retired session's TCP connection to sshd to close")
    wait_for_log(tunnels, r"ssh proxy 'vps' .*closed: no connection uses it since the "
                          r"configuration was reloaded", since=mark)
    # The long direct connection lives on, and the session stays down (its
    # keepalive would show within keepaliveInterval 1 s; a reconnection at
    # sshd too).
    direct.signal(signal.SIGUSR1)
    wait_for_log(direct, "^echoed$")
    assert site.ssh_connections() == 0
    assert site.sshd.log().count("Accepted publickey") == accepted + 1
    assert "reconnecting" not in tunnels.output()[mark:]
    direct.signal(signal.SIGUSR2)
    wait_for_log(direct, "^closed$")


# A target whose accept queue is full until SIGUSR1: a connect to it (sshd's,
# for a channel) gets no answer to its SYNs until then, and succeeds at the
# next SYN after. Prints "accepted" for that connection, and "closed" once
# its other side closes it.
SLOW_TARGET = r"""
import signal, socket
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("10.0.0.1", 9003)); s.listen(0)
filler = socket.create_connection(("10.0.0.1", 9003))  # fills the queue
print("full", flush=True)
signal.sigwait([signal.SIGUSR1])
s.accept()[0].close(); filler.close()
c = s.accept()[0]
print("accepted", flush=True)
while c.recv(4096):
    pass
print("closed", flush=True)
"""


def test_a_channel_confirmed_after_its_connection_gave_up_is_closed(site, tunnels):
    # The server's connect to the target takes longer than the connection's
    # connect timeout (10 s): tunnels gives up on the channel, and the server
    # confirms it later. tunnels must then close it, or sshd would keep it,
    # and its connection to the target, open for as long as the session.
    target = site.srv.spawn(["python3", "-c", SLOW_TARGET], name="slow-target")
    wait_for_log(target, "^full$")
    r = site.client.run(["curl", "-sS", "--max-time", "30", "http://slow.vps.test:9003/"],
                        check=False, timeout=40)
    assert r.returncode != 0
    wait_for_log(tunnels, r"cannot connect slow\.vps\.test:9003: .*no answer in time to open a "
                          r"channel")
    target.signal(signal.SIGUSR1)
    wait_for_log(target, "^accepted$", timeout=40)
    wait_for_log(target, "^closed$", timeout=5)
    wait_for_log(tunnels, r"closed the channel to slow\.vps\.test:9003 that the server opened "
                          r"after its connection had given up")
    # The session goes on.
    assert site.curl("http://www.vps.test/").stdout == "hello from nginx\n"
    assert "reconnecting" not in tunnels.output()


def test_stopping_ends_the_connections_over_ssh_and_the_session(site, tunnels):
    # A second SIGTERM stops at once, live connections or not. Those carried
    # by the ssh session's thread must end then too, with a reset (their
    # data may be incomplete), and the session with them: before the rest of
    # tunnels goes, not whenever the process exits.
    over_ssh = held_client(site, "echo.vps.test", 9000, "over-ssh")
    assert site.ssh_connections() == 1
    mark = tunnels.mark()
    tunnels.signal(signal.SIGTERM)
    wait_for_log(tunnels, r"stopping on SIGTERM; waiting up to \d+ s for 1 live connections",
                 since=mark)
    tunnels.signal(signal.SIGTERM)
    tunnels.popen.wait(timeout=5)
    out = tunnels.output()
    assert tunnels.returncode == 0, out[mark:]
    assert "Sanitizer" not in out
    over_ssh.signal(signal.SIGUSR1)
    over_ssh.popen.wait(timeout=5)
    assert over_ssh.output().splitlines()[-1] == "reset"
    assert re.search(r"ssh proxy 'vps' .*tunnels is stopping; 1 channel\(s\) reset", out[mark:])
    wait_until(lambda: site.ssh_connections() == 0, timeout=5,
               what="the session's TCP connection to sshd to close")
