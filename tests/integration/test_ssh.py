"""ssh proxies end to end, against OpenSSH's sshd in a private world.

Host "srv" (10.0.0.1): dnsmasq (every *.test name is 10.0.0.1), nginx on :80
and :443, sshd on :22 (ed25519 host key), :2201 (rsa), :2202 (ecdsa), :2210
(ed25519, AllowTcpForwarding no), :2220 (ed25519, for the refused host keys),
dante on :1080, small Python servers.
Host "client" (10.0.0.2): tunnels system as the client's resolver, and curl."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from peers import Dante, Nginx, Sshd, descendants, wait_for_port
from scripts import (ECHO_FOREVER_SERVER, ECHO_SERVER, HALF_CLOSE_CLIENT, HALF_CLOSE_SERVER,
                     IDLE_CLIENT, MANY_CLIENTS, REFUSAL_PROBE, RESETTING_CLIENT, STREAM_SERVER)
from sites import SIZE, SYSTEM_CONFIG, TwoHosts
from world import require, wait_for_log, wait_until

KEEPALIVE = 2  # seconds, the main proxy's keepaliveInterval

# name -> (ssh-keygen arguments, passphrase)
CLIENT_KEYS = {
    "rsa_openssh": (["-t", "rsa", "-b", "2048"], ""),
    "rsa_pem": (["-t", "rsa", "-b", "2048", "-m", "PEM"], ""),
    "rsa_pem_enc": (["-t", "rsa", "-b", "2048", "-m", "PEM"], "pem pass"),
    "ecdsa_pem": (["-t", "ecdsa", "-m", "PEM"], ""),
    "ecdsa_enc": (["-t", "ecdsa"], "ecdsa pass"),
    "ed25519": (["-t", "ed25519"], ""),
    "ed25519_enc": (["-t", "ed25519"], "ed pass"),
    "stranger": (["-t", "ed25519"], ""),  # not authorized anywhere
}

# The pinned-fingerprint matrix: proxy -> (sshd port, host key type, form, client key).
PINNED = {
    "rsa_md5": (2201, "rsa", "md5", "rsa_pem"),
    "rsa_sha": (2201, "rsa", "sha256", "ed25519"),
    "ecdsa_md5": (2202, "ecdsa", "md5", "ecdsa_pem"),
    "ecdsa_sha": (2202, "ecdsa", "sha256", "ecdsa_enc"),
    "ed25519_md5": (22, "ed25519", "md5", "rsa_pem_enc"),
    "ed25519_sha": (22, "ed25519", "sha256", "ed25519_enc"),
}


def keygen(path: Path, args: list[str], passphrase: str) -> Path:
    subprocess.run([require("ssh-keygen", "openssh-client"), "-q", *args, "-N", passphrase,
                    "-C", path.name, "-f", str(path)], check=True, capture_output=True)
    return path


def fingerprint(pub: Path, form: str) -> str:
    out = subprocess.run(["ssh-keygen", "-l", "-E", form, "-f", str(pub)], check=True,
                         capture_output=True, text=True).stdout
    value = out.split()[1]
    return value[4:] if form == "md5" else value  # "MD5:aa:bb..." -> "aa:bb..."


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    out = {}
    for name, (args, passphrase) in CLIENT_KEYS.items():
        out[name] = keygen(d / f"client_{name}", args, passphrase)
    for kind in ("rsa", "ecdsa", "ed25519"):
        out[f"host_{kind}"] = keygen(d / f"host_{kind}", ["-t", kind], "")
    return out


class SshWorld(TwoHosts):
    def __init__(self, world, tunnels_bin, keys, big=False, options=""):
        super().__init__(world, big=big)
        self.keys = keys
        www443 = world.tmp_path / "www443"
        www443.mkdir()
        (www443 / "ip").write_text("10.0.0.1\n")
        self.nginx443 = Nginx(self.srv, "10.0.0.1", 443, www443)
        authorized = "".join(Path(f"{keys[k]}.pub").read_text()
                             for k in CLIENT_KEYS if k != "stranger")
        host = {k: keys[f"host_{k}"] for k in ("rsa", "ecdsa", "ed25519")}
        self.sshd = Sshd(self.srv, "10.0.0.1", 22, [host["ed25519"]], authorized)
        self.sshd_rsa = Sshd(self.srv, "10.0.0.1", 2201, [host["rsa"]], authorized)
        self.sshd_ecdsa = Sshd(self.srv, "10.0.0.1", 2202, [host["ecdsa"]], authorized)
        self.sshd_nofwd = Sshd(self.srv, "10.0.0.1", 2210, [host["ed25519"]], authorized,
                               {"AllowTcpForwarding": "no"})
        self.sshd_pins = Sshd(self.srv, "10.0.0.1", 2220, [host["ed25519"]], authorized)
        self.dante = Dante(self.srv, "10.0.0.1", 1080)

        def fp(kind, form):
            return fingerprint(Path(f"{host[kind]}.pub"), form)
        self.fp = fp

        def proxy(name, port, key, pins, extra="", host="10.0.0.1"):
            passphrase = CLIENT_KEYS[key][1]
            lines = [f"  {name}:", "    type: ssh", f"    address: {host}:{port}",
                     "    username: root", f"    privateKey: {keys[key]}"]
            if passphrase:
                lines.append(f"    privateKeyPassphrase: {passphrase}")
            lines += [f"    {k}Fingerprint: \"{v}\"" for k, v in pins.items()]
            return "\n".join(lines) + "\n" + extra

        proxies = proxy("main", 22, "rsa_openssh", {"ed25519": fp("ed25519", "sha256")},
                        f"    keepaliveInterval: {KEEPALIVE}\n")
        for name, (port, kind, form, key) in PINNED.items():
            proxies += proxy(name, port, key, {kind: fp(kind, form)})
        proxies += proxy("wrongpin", 2220, "ed25519", {"ed25519": fp("rsa", "sha256")})
        proxies += proxy("unpinned", 2220, "ed25519", {"rsa": fp("rsa", "md5")})
        proxies += proxy("stranger", 22, "stranger", {"ed25519": fp("ed25519", "md5")})
        proxies += proxy("nofwd", 2210, "ed25519", {"ed25519": fp("ed25519", "sha256")})
        # knownHostsFile instead of fingerprints: a right and a wrong entry.
        rsa_pub = " ".join(Path(f"{host['rsa']}.pub").read_text().split()[:2])
        ecdsa_pub = " ".join(Path(f"{host['ecdsa']}.pub").read_text().split()[:2])
        good, bad = world.tmp_path / "known_hosts", world.tmp_path / "known_hosts.bad"
        good.write_text(f"[10.0.0.1]:2201 {rsa_pub}\n")
        bad.write_text(f"[10.0.0.1]:2202 {rsa_pub}\n[10.0.0.1]:2201 {ecdsa_pub}\n")
        proxies += proxy("known", 2201, "ed25519", {}, f"    knownHostsFile: {good}\n")
        proxies += proxy("unknown", 2202, "ed25519", {}, f"    knownHostsFile: {bad}\n")
        proxies += proxy("viadante", 22, "ed25519", {"ed25519": fp("ed25519", "sha256")},
                         "    parentSocks5Proxy: 10.0.0.1:1080\n", host="sshd.test")
        rules = "".join(f"  .{n.replace('_', '-')}.test: {n}\n" for n in
                        ["main", *PINNED, "wrongpin", "unpinned", "stranger", "nofwd", "viadante",
                         "known", "unknown"])
        self.tunnels = self.start_system(
            tunnels_bin, options + SYSTEM_CONFIG + "proxies:\n" + proxies + "rules:\n" + rules +
            "  vps-ip.pls@https:\n    proxy: main\n    forcedAddress: icanhazip.test\n",
            verbosity="-vv")

    def sessions_up(self, proxy: str) -> int:
        return len(re.findall(rf"ssh proxy '{proxy}' \([^)]*\): session up", self.tunnels.output()))


@pytest.fixture
def sw(world, tunnels_bin, keys):
    return SshWorld(world, tunnels_bin, keys)


def test_each_host_key_type_pinned_in_each_form_and_each_client_key(sw):
    failures = []
    for name, (port, kind, form, key) in PINNED.items():
        r = sw.curl(f"http://www.{name.replace('_', '-')}.test/", check=False)
        if r.stdout != "hello from nginx\n":
            failures.append(f"{name} ({kind} host key pinned as {form}, client key {key}): "
                            f"{r.stderr.strip()}")
    r = sw.curl("http://www.known.test/", check=False)
    if r.stdout != "hello from nginx\n":
        failures.append(f"known (knownHostsFile): {r.stderr.strip()}")
    assert not failures, "\n".join(failures) + "\n" + sw.tunnels.tail(30)
    # The name went to sshd's side: tunnels did not resolve it.
    assert not sw.tunnels_resolved_locally("www.rsa-md5.test")


def test_wrong_and_unpinned_host_keys_are_refused_before_authentication(sw):
    for name, why in (("wrongpin", "it does not match ed25519Fingerprint"),
                      ("unpinned", "no ed25519Fingerprint is set"),
                      ("unknown", "no ecdsaFingerprint is set and ")):
        r = sw.curl(f"http://www.{name}.test/", check=False, timeout=30)
        assert r.returncode != 0
        wait_for_log(sw.tunnels, re.escape(f"ssh proxy '{name}'") + r".*refused the server's host "
                     r"key before authentication: " + re.escape(why))
    # The refusal shows the presented key in both forms, for pinning.
    line = next(l for l in sw.tunnels.output().splitlines() if "proxy 'unpinned'" in l and
                "refused" in l)
    assert sw.fp("ed25519", "sha256") in line
    assert sw.fp("ed25519", "md5") in line
    # sshd never saw an authentication attempt.
    assert "publickey" not in sw.sshd_pins.log()
    assert "Accepted" not in sw.sshd_pins.log()


def test_a_rejected_key_is_one_clear_line(sw):
    r = sw.curl("http://www.stranger.test/", check=False, timeout=30)
    assert r.returncode != 0
    wait_for_log(sw.tunnels, r"\[SSH\].*the server 10\.0\.0\.1:22 rejected the key "
                 + re.escape(str(sw.keys["stranger"])) + r" for user 'root'")


def test_100_mb_through_ssh_intact(world, tunnels_bin, keys):
    e = SshWorld(world, tunnels_bin, keys, big=True)
    r = e.client.run("curl -sS --fail --max-time 100 http://big.main.test/big.bin | sha256sum",
                     timeout=120)
    assert r.stdout.split()[0] == e.big_sha
    # The session thread carries the client's socket itself and counts the
    # bytes for the connection's line.
    m = wait_for_log(e.tunnels, r"\[NET\] big\.main\.test:80 via main -> closed, (\d+) bytes up, "
                                r"(\d+) down, \d+\.\d+ s$")
    assert 0 < int(m[1]) < 4096 and SIZE < int(m[2]) < SIZE + 4096, m[0]


def test_an_idle_channel_is_reset_after_connection_idle_timeout(world, tunnels_bin, keys):
    e = SshWorld(world, tunnels_bin, keys, options="connectionIdleTimeout: 2\n")
    server = e.srv.spawn(["python3", "-c", ECHO_FOREVER_SERVER, "10.0.0.1", "9000"], name="echo")
    wait_for_port(e.srv, "10.0.0.1", 9000, "echo server", server)
    # As through the relay (test_engine): kept while busy, reset 2-2.5 s
    # after it falls silent.
    how, after = e.python(e.client, IDLE_CLIENT, "idle.main.test", 9000, 0.5, 5).split()
    assert how == "reset", (how, after)
    assert 1.9 <= float(after) < 10, after
    wait_for_log(e.tunnels, r"\[NET\] idle\.main\.test:9000 via main -> idle for 2 s "
                            r"\(connectionIdleTimeout\); reset both sides, \d+ bytes up")
    # The session carries on.
    assert e.curl("http://www.main.test/").stdout == "hello from nginx\n"
    assert e.sessions_up("main") == 1


def test_200_concurrent_connections_over_one_session(sw):
    server = sw.srv.spawn(["python3", "-c", ECHO_SERVER, "10.0.0.1", "9000"], name="echo")
    wait_for_port(sw.srv, "10.0.0.1", 9000, "echo server", server)
    assert sw.python(sw.client, MANY_CLIENTS, "many.main.test", 9000, 200, timeout=120) == "200 []"
    assert sw.sessions_up("main") == 1
    assert sw.sshd.log().count("Accepted publickey") == 1


def test_sshd_killed_and_restarted(sw):
    assert sw.curl("http://www.main.test/").stdout == "hello from nginx\n"
    # Whichever side of the session notices first names it: a read sees the
    # server end it, a write sees it broken. Both are the same event.
    sw.sshd.kill()
    wait_for_log(sw.tunnels, r"ssh proxy 'main'.*the session (ended|broke)")
    sw.sshd.start()
    started = time.monotonic()
    assert sw.curl("http://www.main.test/", timeout=20).stdout == "hello from nginx\n"
    assert time.monotonic() - started < 2
    assert sw.sessions_up("main") == 2
    assert sw.tunnels.alive()
    # sshd gone for good: a connection waits for the session meanwhile, and
    # tunnels still stops at once and cleanly.
    mark = sw.tunnels.mark()
    sw.sshd.kill()
    wait_for_log(sw.tunnels, r"ssh proxy 'main'.*the session (ended|broke)", since=mark)
    waiting = sw.client.spawn(["curl", "-sS", "--max-time", "20", "http://www.main.test/"],
                              name="waiting-curl")
    wait_until(lambda: sw.client.run(["ss", "-Htn", "state", "established", "( dport = :80 )"])
               .stdout.strip() != "", timeout=5, what="the waiting connection to reach tunnels")
    stopping = time.monotonic()
    assert sw.tunnels.stop(timeout=10) == 0
    assert time.monotonic() - stopping < 3
    assert "Sanitizer" not in sw.tunnels.output()
    waiting.popen.wait(timeout=5)
    assert waiting.returncode != 0


HOLD_SERVER = r"""
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(64)
held = []
while True:
    held.append(s.accept()[0])
"""


def test_a_silent_server_is_detected_and_its_channels_reset(sw):
    server = sw.srv.spawn(["python3", "-c", HOLD_SERVER, "10.0.0.1", "9001"], name="hold")
    wait_for_port(sw.srv, "10.0.0.1", 9001, "hold server", server)
    probe = sw.client.spawn(["python3", "-c", REFUSAL_PROBE, "hold.main.test", "9001"],
                            name="probe")
    wait_for_log(sw.tunnels, r"hold\.main\.test:9001 via main", timeout=10)
    # Freeze the session's sshd processes: the TCP connection stays, nothing answers.
    session = descendants(sw.sshd.proc.pid)
    assert session
    for pid in session:
        os.kill(pid, signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        wait_for_log(sw.tunnels, r"ssh proxy 'main'.*no answer from the server",
                     timeout=3 * KEEPALIVE)
        assert time.monotonic() - stopped <= 2 * KEEPALIVE + 0.5
        # The channel's client got a reset.
        probe.popen.wait(timeout=5)
        assert probe.output().split()[0] == "reset"
    finally:
        for pid in session:
            os.kill(pid, signal.SIGKILL)
    # A new session serves the next connection.
    assert sw.curl("http://www.main.test/", timeout=20).stdout == "hello from nginx\n"


def test_a_refused_channel_resets_its_client_and_the_session_goes_on(sw):
    outcome, ms = sw.python(sw.client, REFUSAL_PROBE, "www.nofwd.test", 80).split()
    assert outcome == "reset"
    wait_for_log(sw.tunnels, r"ssh proxy 'nofwd'.*refused a channel to www\.nofwd\.test:80: .*"
                 r"prohibited")
    outcome, ms = sw.python(sw.client, REFUSAL_PROBE, "www.nofwd.test", 80).split()
    assert outcome == "reset"
    assert sw.sessions_up("nofwd") == 1
    # A target the server cannot reach: that channel alone is refused.
    outcome, ms = sw.python(sw.client, REFUSAL_PROBE, "closed.main.test", 9).split()
    assert outcome == "reset"
    wait_for_log(sw.tunnels, r"ssh proxy 'main'.*refused a channel to closed\.main\.test:9")
    assert sw.curl("http://www.main.test/").stdout == "hello from nginx\n"
    assert sw.sessions_up("main") == 1


def test_session_through_a_parent_socks5_proxy(sw):
    assert sw.curl("http://www.viadante.test/").stdout == "hello from nginx\n"
    # dante connected to sshd (the name sshd.test resolved on dante's side).
    wait_until(lambda: "10.0.0.1.22" in sw.dante.log(), timeout=5, what="dante's connect log")
    assert not sw.tunnels_resolved_locally("sshd.test")


def test_forced_address_rule_through_ssh(sw):
    # The seed example's "vps-ip.pls@https: {proxy: myvps, forcedAddress: icanhazip.com}".
    assert sw.curl("http://vps-ip.pls:443/ip").stdout == "10.0.0.1\n"
    assert any(q.name == "icanhazip.test" and q.client.startswith("10.0.0.1")
               for q in sw.dnsmasq.query_log())
    assert "vps-ip.pls" not in sw.dnsmasq.queries()


def test_half_close_through_ssh(sw):
    # The client shuts down its side after sending 5 MB; the server answers
    # only then: the channel's EOF went one way, the answer still comes back.
    server = sw.srv.spawn(["python3", "-c", HALF_CLOSE_SERVER, "10.0.0.1", "9000"],
                          name="halfclose")
    wait_for_port(sw.srv, "10.0.0.1", 9000, "half-close server", server)
    assert sw.python(sw.client, HALF_CLOSE_CLIENT, "hc.main.test", 9000) == "ok"


def test_a_client_that_resets_mid_stream_ends_only_its_channel(sw):
    server = sw.srv.spawn(["python3", "-c", STREAM_SERVER, "10.0.0.1", "9002"], name="stream")
    wait_for_port(sw.srv, "10.0.0.1", 9002, "stream server", server)
    assert sw.python(sw.client, RESETTING_CLIENT, "stream.main.test", 9002, 5 << 20) == "ok"
    # tunnels ended the channel, so sshd closed its connection to the server...
    wait_for_log(server, r"^gone \d+", timeout=10)
    wait_for_log(sw.tunnels, r"\[NET\] stream\.main\.test:9002 via main -> .*reset.*, "
                             r"\d+ bytes up, (\d+) down")
    # ...and the session carries on with the next connection.
    assert sw.curl("http://www.main.test/").stdout == "hello from nginx\n"
    assert sw.sessions_up("main") == 1


def one_ssh_proxy_beside(world, tunnels_bin, keys, server_script, name, address, extra=""):
    """A TwoHosts world with `server_script` (Python; it prints "listening"
    once ready) on srv as process `name`, and tunnels system on client with
    one ssh proxy, `mute`, at `address` (its host key pin never checked:
    these tests end before that), for every *.mute.test name. Returns
    (site, server, tunnels)."""
    site = TwoHosts(world)
    server = site.srv.spawn(["python3", "-c", server_script], name=name)
    wait_for_log(server, "listening")
    tunnels = site.start_system(
        tunnels_bin, SYSTEM_CONFIG + "proxies:\n  mute:\n    type: ssh\n"
        f"    address: {address}\n    username: root\n    privateKey: {keys['ed25519']}\n"
        "    ed25519Fingerprint: \"SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"\n"
        + extra + "rules:\n  .mute.test: mute\n")
    return site, server, tunnels


def stop_cleanly(tunnels, timeout) -> float:
    """SIGTERM, then tunnels must exit 0 within `timeout`; returns how long
    it took."""
    start = time.monotonic()
    tunnels.signal(signal.SIGTERM)
    tunnels.popen.wait(timeout=timeout)
    assert tunnels.returncode == 0, tunnels.output()
    return time.monotonic() - start


MUTE_SERVER = r"""
import socket
# Takes TCP connections and says nothing: an SSH handshake with it blocks.
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("10.0.0.1", 9002)); s.listen(8)
print("listening", flush=True)
held = []
while True:
    held.append(s.accept()[0])
    print("accepted", flush=True)
"""


def test_stopping_does_not_wait_for_a_handshake_with_a_mute_server(world, tunnels_bin, keys):
    # The session's handshake blocks its own thread for up to 10 s; tunnels
    # stopping meanwhile (or a reload dropping that proxy) must not wait for
    # it on the engine's thread, where every connection and DNS answer waits
    # too.
    site, mute, tunnels = one_ssh_proxy_beside(world, tunnels_bin, keys, MUTE_SERVER, "mute",
                                               "10.0.0.1:9002")
    site.client.spawn(["curl", "-sS", "--max-time", "30", "http://www.mute.test/"], name="curl")
    wait_for_log(mute, "accepted", timeout=10)
    assert stop_cleanly(tunnels, 20) < 3, tunnels.output()


def test_a_reload_does_not_wait_for_a_handshake_with_a_mute_server(world, tunnels_bin, keys):
    # A reload drops the proxy's old session while its thread is blocked in a
    # handshake (here the retry that follows the first one's 10 s timeout).
    # The engine's thread must not wait for that handshake: DNS answers and
    # connections would stop for up to 10 s.
    site, mute, tunnels = one_ssh_proxy_beside(world, tunnels_bin, keys, MUTE_SERVER, "mute",
                                               "10.0.0.1:9002")
    site.client.spawn(["curl", "-sS", "--max-time", "30", "http://www.mute.test/"], name="curl")
    wait_for_log(mute, "accepted", timeout=10)
    # The first handshake times out with the connection's 10 s; the session
    # tries again at once, with no connection waiting for it.
    wait_for_log(mute, r"accepted\n(.|\n)*accepted", timeout=20)
    mark = tunnels.mark()
    tunnels.signal(signal.SIGHUP)
    wait_for_log(tunnels, r"\[CONFIG\] SIGHUP", since=mark)
    start = time.monotonic()
    r = site.client.run(["dig", "+tries=1", "+timeout=5", "@127.0.0.1", "www.plain.test"],
                        check=False)
    assert "status: NOERROR" in r.stdout, r.stdout
    assert time.monotonic() - start < 2
    wait_for_log(tunnels, r"\[CONFIG\] reloaded", since=mark)


SLOW_PARENT = r"""
import signal, socket
# A SOCKS5 parent proxy that fails the first connection at once, then holds
# the next ones without a word until SIGUSR1 closes them.
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("10.0.0.1", 1090)); s.listen(8)
held = []
def close_all(*_):
    for c in held:
        c.close()
    print("closed", flush=True)
signal.signal(signal.SIGUSR1, close_all)
print("listening", flush=True)
s.accept()[0].close()
print("refused", flush=True)
while True:
    held.append(s.accept()[0])
    print("holding", flush=True)
"""


def test_a_reload_while_a_session_connects_through_its_parent_proxy(world, tunnels_bin, keys):
    # The session's transport is being connected through parentSocks5Proxy
    # (on the engine's thread) when a reload drops the session: what that
    # connect uses (the parent connector, its context) must outlive it. The
    # sanitizer build checks that nothing freed is touched when the parent
    # finally answers.
    site, parent, tunnels = one_ssh_proxy_beside(world, tunnels_bin, keys, SLOW_PARENT,
                                                 "parent", "10.0.0.1:22",
                                                 "    parentSocks5Proxy: 10.0.0.1:1090\n")
    r = site.curl("http://www.mute.test/", check=False, timeout=20)
    assert r.returncode != 0
    # A retry that starts after the connection gave up: nobody waits for it.
    since = parent.mark()
    wait_for_log(parent, "holding", timeout=15, since=since)
    mark = tunnels.mark()
    tunnels.signal(signal.SIGHUP)
    wait_for_log(tunnels, r"\[CONFIG\] reloaded", since=mark)
    parent.signal(signal.SIGUSR1)
    wait_for_log(parent, "closed")
    # The old session's connect ends on the parent's close; tunnels lives on.
    assert site.client.run(["dig", "+short", "@127.0.0.1", "www.plain.test"]).stdout.strip()
    assert tunnels.alive()
    stop_cleanly(tunnels, 10)
    assert "Sanitizer" not in tunnels.output()
