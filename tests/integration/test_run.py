"""`tunnels run -- CMD` in a private world.

Host "outer" is the caller's side: tunnels runs there (as root of the world)
and creates the sandbox; its resolver is dnsmasq on host "srv" (10.0.0.1),
which also runs nginx and dante (sites.TwoHosts, with "outer" as its client).
Every *.test name is 10.0.0.1."""

from __future__ import annotations

import os
import pwd
import re
import signal
import tempfile
import time
from pathlib import Path

import pytest

from peers import Dante
from sites import TwoHosts
from world import missing, wait_for_log, wait_until

CONFIG = """
proxies:
  dante: {type: socks5, address: 10.0.0.1:1080}
rules:
  .via-dante.test: dante
  "*.onion": dante
"""


class RunWorld(TwoHosts):
    def __init__(self, world, tunnels_bin):
        super().__init__(world, client="outer")
        self.bin = str(tunnels_bin)
        self.outer = self.client
        self.outer.use_nameserver("10.0.0.1")
        self.dante = Dante(self.srv, "10.0.0.1", 1080)
        self.conf = world.tmp_path / "tunnels.yml"
        self.conf.write_text(CONFIG)
        self.state = world.tmp_path / "state"

    def argv(self, *command, strict=False, extra=()):
        return [self.bin, "run", "-c", str(self.conf), *(["--strict"] if strict else []),
                *extra, "--", *command]

    def run(self, *command, strict=False, check=False, timeout=30, prefix=(), extra=(),
            env=None):
        return self.outer.run([*prefix, *self.argv(*command, strict=strict, extra=extra)],
                              check=check, timeout=timeout, env=env)

    def spawn(self, *command, strict=False, name="tunnels-run"):
        return self.outer.spawn(self.argv(*command, strict=strict), name=name,
                                line_buffered=False)

    def leftovers(self) -> dict:
        links = self.outer.run(["ip", "-o", "link"]).stdout
        tables = self.outer.run(["nft", "list", "tables"]).stdout
        return {
            "veth": re.findall(r"\btnl\d+\w*", links),
            "nft": re.findall(r"tunnels_run_\d+", tables),
            "ip_forward": self.outer.run(["cat", "/proc/sys/net/ipv4/ip_forward"]).stdout.strip(),
        }


@pytest.fixture
def rw(world, tunnels_bin):
    return RunWorld(world, tunnels_bin)


def test_ruled_name_through_the_proxy_and_others_directly(rw):
    r = rw.run("curl", "-sS", "--max-time", "10", "http://www.via-dante.test/")
    assert (r.returncode, r.stdout) == (0, "hello from nginx\n"), r.stderr
    # dante resolved the name (query from 10.0.0.1); tunnels never did.
    log = rw.dnsmasq.query_log()
    assert any(q.name == "www.via-dante.test" and q.client.startswith("10.0.0.1") for q in log)
    assert not any(q.name == "www.via-dante.test" and q.client.startswith("10.0.0.2")
                   for q in log)
    r = rw.run("curl", "-sS", "--max-time", "10", "http://plain.test/")
    assert (r.returncode, r.stdout) == (0, "hello from nginx\n"), r.stderr


def test_private_resolv_conf_and_the_callers_untouched(rw):
    before = rw.outer.run(["cat", "/etc/resolv.conf"]).stdout
    r = rw.run("cat", "/etc/resolv.conf")
    assert "nameserver 127.0.0.1" in r.stdout
    assert "10.0.0.1" not in r.stdout
    assert rw.outer.run(["cat", "/etc/resolv.conf"]).stdout == before


def test_getent_goes_through_tunnels_even_with_nss_resolve(rw):
    nss = rw.world.tmp_path / "nsswitch.conf"
    nss.write_text("passwd: files\ngroup: files\n"
                   "hosts: files resolve [!UNAVAIL=return] mdns4_minimal [NOTFOUND=return] dns\n")
    # The world's own nsswitch.conf, for this command only (ip netns exec
    # gives each command its own mount namespace).
    script = f'mount --bind {nss} /etc/nsswitch.conf && exec "$@"'
    r = rw.run("getent", "hosts", "abc.onion", prefix=("sh", "-c", script, "sh"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0].startswith("198.1")  # a fake address
    r = rw.run("grep", "^hosts:", "/etc/nsswitch.conf", prefix=("sh", "-c", script, "sh"))
    assert r.stdout.strip() == "hosts: files dns"


def test_exit_status_and_signals(rw):
    assert rw.run("sh", "-c", "exit 7").returncode == 7
    assert rw.run("sh", "-c", "kill -TERM $$").returncode == 128 + signal.SIGTERM
    assert rw.run("/nonexistent/program").returncode == 127
    # A signal sent to tunnels reaches the program.
    p = rw.spawn("sh", "-c", "trap 'echo got-term; exit 3' TERM; echo ready; "
                 "while :; do sleep 0.1; done")
    wait_for_log(p, "ready")
    p.popen.send_signal(signal.SIGTERM)
    assert p.popen.wait(timeout=10) == 3
    assert "got-term" in p.output()


def test_sandbox_is_its_own_pid_namespace_without_new_privileges(rw):
    r = rw.run("sh", "-c", "echo $$; grep NoNewPrivs /proc/self/status; ls /proc | grep -c '^[0-9]'")
    pid, nnp, count = r.stdout.split("\n")[:3]
    assert int(pid) <= 3
    assert nnp.split() == ["NoNewPrivs:", "1"]
    assert int(count) <= 5  # init, sh, ls, grep


NOBODY = 65534  # in every Debian's /etc/passwd, hence in the world's


def test_program_runs_as_a_non_root_user_of_the_world(rw):
    if int(os.environ.get("TUNNELS_WORLD_IDS", "1")) <= NOBODY:
        missing("the world maps no id but root (run-in-world needs the caller's /etc/subuid "
                "and /etc/subgid ranges and newuidmap/newgidmap, package uidmap)")
    script = ("id -u; id -g; grep NoNewPrivs /proc/self/status; "
              "getent hosts www.via-dante.test; curl -sS --max-time 10 http://www.via-dante.test/; "
              "if echo x 2>/dev/null >>/etc/resolv.conf; then echo resolv-writable; fi; "
              "echo \"$HOME $USER $LOGNAME $SHELL $DISPLAY\"")
    # --user, and the way sudo names the invoking user (sudo leaves root's
    # HOME, USER, LOGNAME and SHELL; the program gets its user's own).
    as_root = {"HOME": "/root", "USER": "root", "LOGNAME": "root", "SHELL": "/bin/bash",
               "DISPLAY": ":7"}
    # Under sudo the configuration is read with the user's rights: give it
    # one the user can read.
    readable = Path(tempfile.mkdtemp(dir="/run"))
    readable.chmod(0o755)
    rw.conf = readable / "tunnels.yml"
    rw.conf.write_text(CONFIG)
    rw.conf.chmod(0o644)
    for how in ({"extra": ("--user", "nobody"), "env": as_root},
                {"env": {"SUDO_UID": str(NOBODY), "SUDO_GID": str(NOBODY), **as_root}}):
        r = rw.run("sh", "-c", script, **how)
        assert r.returncode == 0, (how, r.stderr)
        lines = r.stdout.split("\n")
        assert lines[0:2] == [str(NOBODY), str(NOBODY)], (how, r.stdout)
        assert lines[2].split() == ["NoNewPrivs:", "1"]
        # The ruled name has a fake address and works through dante for this
        # user too; the sandbox's resolv.conf is not the user's to change.
        assert lines[3].split()[0].startswith("198.18."), r.stdout
        assert "hello from nginx" in r.stdout
        assert "resolv-writable" not in r.stdout
        nobody = pwd.getpwuid(NOBODY)
        assert lines[-2] == f"{nobody.pw_dir} nobody nobody {nobody.pw_shell} :7", r.stdout
    assert rw.leftovers()["veth"] == []


def test_the_sandbox_files_are_readable_whatever_the_umask(rw):
    # sudo keeps the caller's umask; with 077 the sandbox's resolv.conf and
    # nsswitch.conf, written by root, must still be readable by the program.
    if int(os.environ.get("TUNNELS_WORLD_IDS", "1")) <= NOBODY:
        missing("the world maps no id but root (see the test above)")
    r = rw.run("sh", "-c", "cat /etc/resolv.conf /etc/nsswitch.conf >/dev/null && echo readable",
               extra=("--user", "nobody"), prefix=("sh", "-c", 'umask 077; exec "$@"', "sh"))
    assert r.stdout == "readable\n", r.stderr


def test_nothing_remains_after_exit_sigterm_and_sigkill(rw):
    forward_before = rw.leftovers()["ip_forward"]
    assert rw.run("true").returncode == 0
    assert rw.leftovers() == {"veth": [], "nft": [], "ip_forward": forward_before}

    p = rw.spawn("sleep", "1000", name="term")
    wait_until(lambda: rw.leftovers()["veth"], what="the sandbox's veth")
    p.popen.send_signal(signal.SIGTERM)
    p.popen.wait(timeout=10)
    assert rw.leftovers() == {"veth": [], "nft": [], "ip_forward": forward_before}

    p = rw.spawn("sleep", "1000", name="kill")
    wait_until(lambda: rw.leftovers()["veth"], what="the sandbox's veth")
    p.popen.send_signal(signal.SIGKILL)
    p.popen.wait(timeout=10)
    # The sandbox dies with tunnels: no sleep left anywhere in the world.
    wait_until(lambda: rw.outer.run(["pgrep", "-x", "sleep"], check=False).returncode == 1,
               what="the sandbox's processes to end")
    wait_until(lambda: not rw.leftovers()["veth"], what="the veth to go with the sandbox")
    # tunnels' guardian process undoes the rest (forwarding above all), with
    # nobody running `tunnels cleanup`.
    clean = {"veth": [], "nft": [], "ip_forward": forward_before}
    wait_until(lambda: rw.leftovers() == clean, what="the guardian to undo the rest")
    wait_until(lambda: rw.outer.run(["pgrep", "-f", "tunnels (run|cleanup)"],
                                    check=False).returncode == 1,
               what="the guardian to end")
    state = rw.outer.run(["sh", "-c", "ls -A /run/tunnels 2>/dev/null"]).stdout.split()
    assert [f for f in state if f != ".lock"] == []
    r = rw.outer.run([rw.bin, "cleanup"])
    assert r.stdout == "", r.stdout  # nothing left for it


def test_what_turning_forwarding_on_and_off_rewrites_is_put_back(rw):
    # Writing net.ipv4.ip_forward also rewrites all.accept_redirects and the
    # forwarding flag of default and of every interface; tunnels turns it on
    # and off again, and leaves a hardened host (accept_redirects 0) and an
    # interface forwarding on its own as they were: after a clean exit, and
    # after a SIGKILL.
    o = rw.outer
    o.run(["ip", "link", "add", "fwd0", "type", "veth", "peer", "name", "fwd1"])
    keys = ["ip_forward", "conf/all/accept_redirects", "conf/default/forwarding",
            "conf/fwd0/forwarding", "conf/fwd1/forwarding"]

    def settings():
        return {k: o.run(["cat", f"/proc/sys/net/ipv4/{k}"]).stdout.strip() for k in keys}

    for key, value in (("ip_forward", 0), ("conf/all/accept_redirects", 0),
                       ("conf/fwd0/forwarding", 1)):
        o.run(["sh", "-c", f"echo {value} > /proc/sys/net/ipv4/{key}"])
    before = settings()
    assert before == {"ip_forward": "0", "conf/all/accept_redirects": "0",
                      "conf/default/forwarding": "0", "conf/fwd0/forwarding": "1",
                      "conf/fwd1/forwarding": "0"}
    r = rw.run("curl", "-sS", "--max-time", "10", "http://plain.test/")  # forwarded
    assert r.stdout == "hello from nginx\n", r.stderr
    assert settings() == before

    p = rw.spawn("sleep", "1000", name="kill")
    wait_until(lambda: rw.leftovers()["veth"], what="the sandbox's veth")
    assert settings()["ip_forward"] == "1"
    p.popen.send_signal(signal.SIGKILL)
    p.popen.wait(timeout=10)
    # Put back by the guardian of the killed instance.
    wait_until(lambda: settings() == before, what="the settings to be put back")


def test_a_firewall_that_drops_forwarding_is_named_with_the_fix(rw):
    # Docker and ufw set the FORWARD policy to drop; a drop in any table is
    # final, so the sandbox's direct traffic dies there. tunnels says so,
    # and the rules it suggests let the traffic through.
    rw.outer.run(["nft", "add table ip filter; add chain ip filter FORWARD "
                  "{ type filter hook forward priority 0; policy drop; }"])
    r = rw.run("curl", "-sS", "--max-time", "3", "http://plain.test/")
    assert r.returncode != 0
    m = re.search(r"the nftables chain ip filter FORWARD drops forwarded packets.*?: "
                  r"(nft insert rule [^;]*); (nft insert rule .*)$", r.stderr, re.MULTILINE)
    assert m, r.stderr
    for command in m.groups():
        rw.outer.run(command.split())
    r = rw.run("curl", "-sS", "--max-time", "10", "http://plain.test/")
    assert r.stdout == "hello from nginx\n", r.stderr
    # Through a proxy, nothing is forwarded: that worked all along.
    rw.outer.run(["nft", "flush chain ip filter FORWARD"])
    r = rw.run("curl", "-sS", "--max-time", "10", "http://www.via-dante.test/")
    assert r.stdout == "hello from nginx\n", r.stderr


def test_two_sandboxes_at_once(rw):
    a = rw.spawn("sleep", "1000", name="first")
    wait_until(lambda: rw.leftovers()["veth"], what="the first sandbox")
    r = rw.run("curl", "-sS", "--max-time", "10", "http://www.via-dante.test/")
    assert r.stdout == "hello from nginx\n", r.stderr
    r = rw.run("curl", "-sS", "--max-time", "10", "http://plain.test/")
    assert r.stdout == "hello from nginx\n", r.stderr
    assert a.alive()


def test_strict_mode(rw):
    r = rw.run("curl", "-sS", "--max-time", "10", "http://www.via-dante.test/", strict=True)
    assert r.stdout == "hello from nginx\n", r.stderr
    start = time.monotonic()
    r = rw.run("curl", "-sS", "--max-time", "10", "http://plain.test/", strict=True)
    assert r.returncode != 0
    r = rw.run("curl", "-sS", "--max-time", "10", "http://10.0.0.1/", strict=True)
    assert r.returncode != 0
    assert time.monotonic() - start < 5  # both fail at once, no timeout
    assert rw.leftovers()["veth"] == []


def test_without_privileges_it_says_so_and_changes_nothing(rw):
    r = rw.run("true", prefix=("setpriv", "--bounding-set=-sys_admin,-net_admin", "--"))
    assert r.returncode == 125
    assert "needs CAP_SYS_ADMIN and CAP_NET_ADMIN" in r.stderr
    assert rw.leftovers()["veth"] == []
