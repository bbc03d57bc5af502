"""tunnels system as a service: resolv.conf handover, crash-safe cleanup
through the journal, persistent mappings, reload and graceful stop.

Host "srv" (10.0.0.1): dnsmasq (every *.test name is 10.0.0.1), nginx on :80
with a 100 MB file, dante on :1080 and microsocks on :1082.
Host "client" (10.0.0.2): tunnels system. Its resolvconfPath,
resolvconfBackupPath and stateDirectory point into the test's own tmpfs, so
the handover is tested on files of the world, never on the machine's own
/etc/resolv.conf. Lookups in the client go to tunnels (127.0.0.1:53) through
the world's private resolv.conf for that host."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import textwrap

import pytest

from peers import Dante, Microsocks
from sites import TwoHosts
from world import dig, require, wait_for_log, wait_until

ORIGINAL = "# the world's own resolv.conf\nnameserver 10.0.0.1\n"
TABLE = "tunnels_redirects"
READY = r"\[DNS\] listening on udp 127\.0\.0\.1:53"


class SystemWorld(TwoHosts):
    def __init__(self, world, tunnels_bin, *, big=False, link=False, immutable=False,
                 rules=".via-dante.test: dante\n"):
        require("nft", "nftables")
        super().__init__(world, big=big)
        self.bin = str(tunnels_bin)
        self.dante = Dante(self.srv, "10.0.0.1", 1080)
        self.micro = Microsocks(self.srv, "10.0.0.1", 1082)

        self.etc = world.tmp_path / "etc"
        self.etc.mkdir()
        self.resolv = self.etc / "resolv.conf"
        self.backup = self.etc / "resolv.conf.tunnels-backup"
        self.state = world.tmp_path / "state"
        self.link_target = None
        if link:
            # As systemd-resolved does it: resolv.conf is a link elsewhere.
            self.link_target = self.etc / "stub-resolv.conf"
            self.link_target.write_text(ORIGINAL)
            self.resolv.symlink_to("stub-resolv.conf")
        else:
            self.resolv.write_text(ORIGINAL)
        self.conf = world.tmp_path / "tunnels.yml"
        self.write_config(rules, immutable=immutable)
        self.tunnels = None
        self.client.use_nameserver("127.0.0.1")

    def write_config(self, rules, immutable=False, extra=""):
        text = textwrap.dedent(f"""\
            upstreamDns: 10.0.0.1
            dnsBindAddress: 127.0.0.1
            dnsPort: 53
            overwriteResolvconf: true
            restoreResolvConf: true
            makeResolvconfImmutable: {'true' if immutable else 'false'}
            resolvconfPath: {self.resolv}
            resolvconfBackupPath: {self.backup}
            stateDirectory: {self.state}
            proxies:
              dante: {{type: socks5, address: 10.0.0.1:1080}}
              micro: {{type: socks5, address: 10.0.0.1:1082}}
            """) + extra + "rules:\n" + textwrap.indent(rules, "  ")
        # Atomically, as an editor or a configuration manager would.
        tmp = self.conf.with_suffix(".new")
        tmp.write_text(text)
        tmp.rename(self.conf)

    def start(self, *args, unit=True):
        # As under the systemd unit (INVOCATION_ID), which runs cleanup
        # itself: no guardian, so that what a kill leaves can be examined.
        env = {"INVOCATION_ID": "test"} if unit else None
        self.tunnels = self.client.spawn([self.bin, "system", "-v", *args, str(self.conf)],
                                         name="tunnels", line_buffered=False, env=env)
        wait_for_log(self.tunnels, READY, timeout=10)
        return self.tunnels

    def stop(self, sig=signal.SIGTERM, timeout=20):
        self.tunnels.signal(sig)
        self.tunnels.popen.wait(timeout=timeout)
        return self.tunnels.returncode

    def cleanup(self, *args):
        return self.client.run([self.bin, "cleanup", *args, str(self.conf)], check=False)

    # What tunnels changes, as the kernel and the file system show it.
    def has_route(self):
        out = self.client.run(["ip", "route", "show", "table", "local"]).stdout
        return "198.18.0.0/15" in out

    def has_table(self):
        return self.client.run(["nft", "list", "table", "ip", TABLE], check=False).returncode == 0

    def resolv_is_original(self):
        if self.link_target is not None:
            return (self.resolv.is_symlink()
                    and os.readlink(self.resolv) == "stub-resolv.conf"
                    and self.link_target.read_text() == ORIGINAL)
        return not self.resolv.is_symlink() and self.resolv.read_text() == ORIGINAL

    def assert_taken_over(self):
        assert self.has_route()
        assert self.has_table()
        assert not self.resolv.is_symlink()
        assert "nameserver 127.0.0.1\n" in self.resolv.read_text()
        assert (self.state / "system.journal").exists()

    def assert_pristine(self):
        assert not self.has_route()
        assert not self.has_table()
        assert self.resolv_is_original()
        assert not os.path.lexists(self.backup)
        assert not (self.state / "system.journal").exists()

    def address(self, name):
        answers = dig(self.client, "127.0.0.1", name).addresses
        assert answers, name
        return answers[0]

    def start_download(self, rate, first_mib):
        """curl fetching big.bin through dante at `rate` (curl's
        --limit-rate), into big.out; returns once `first_mib` MiB arrived."""
        out = self.world.tmp_path / "big.out"
        download = self.client.spawn(["curl", "-sS", "--fail", "--limit-rate", rate, "-o",
                                      str(out), "http://big.via-dante.test/big.bin"],
                                     name="download")
        wait_until(lambda: out.exists() and out.stat().st_size > first_mib * 1024 * 1024,
                   timeout=30, what="the first megabytes of the download")
        self.download_out = out
        return download

    def assert_download_intact(self, download, timeout):
        assert download.popen.wait(timeout=timeout) == 0
        assert hashlib.sha256(self.download_out.read_bytes()).hexdigest() == self.big_sha



@pytest.mark.parametrize("kind", ["file", "link"])
def test_resolv_conf_is_taken_over_and_given_back(world, tunnels_bin, kind):
    s = SystemWorld(world, tunnels_bin, link=kind == "link")
    s.start()
    s.assert_taken_over()
    # The backup is the original: a copy of the file, or the same link.
    if kind == "link":
        assert os.readlink(s.backup) == "stub-resolv.conf"
    else:
        assert s.backup.read_text() == ORIGINAL
    assert s.curl("http://www.via-dante.test/").stdout == "hello from nginx\n"
    assert s.stop() == 0
    s.assert_pristine()


@pytest.mark.parametrize("then", ["cleanup", "restart"])
def test_kill_9_leaves_nothing_after_cleanup_or_restart(world, tunnels_bin, then):
    s = SystemWorld(world, tunnels_bin)
    s.start()
    s.assert_taken_over()
    s.stop(signal.SIGKILL)
    # What the kernel does not remove by itself is still there.
    assert s.has_route()
    assert "nameserver 127.0.0.1" in s.resolv.read_text()
    if then == "cleanup":
        r = s.cleanup()
        assert r.returncode == 0, r.stderr
        assert "undid" in r.stdout
        s.assert_pristine()
        # Idempotent: a second cleanup finds nothing to do.
        r = s.cleanup()
        assert r.returncode == 0 and r.stdout == "", (r.stdout, r.stderr)
        s.assert_pristine()
    else:
        t = s.start()
        wait_for_log(t, r"instance's leftover: undid resolvconf")
        s.assert_taken_over()
        # The backup is the original, not the killed instance's file.
        assert s.backup.read_text() == ORIGINAL
        assert s.curl("http://www.via-dante.test/").stdout == "hello from nginx\n"
        assert s.stop() == 0
        s.assert_pristine()


def test_after_a_reboot_cleanup_gives_resolv_conf_back_without_a_journal(world, tunnels_bin):
    # The journal lives in the state directory (/run by default), which a
    # reboot empties, as it drops the route; resolv.conf and its backup, in
    # /etc, stay. cleanup recognises tunnels' file and puts the backup back.
    s = SystemWorld(world, tunnels_bin)
    s.start()
    s.stop(signal.SIGKILL)
    (s.state / "system.journal").unlink()
    s.client.run(["ip", "route", "del", "local", "198.18.0.0/15", "table", "local"])
    r = s.cleanup()
    assert r.returncode == 0, r.stderr
    assert "back from" in r.stdout, r.stdout
    s.assert_pristine()
    # Nothing of tunnels' left: nothing more to do.
    r = s.cleanup()
    assert (r.returncode, r.stdout) == (0, ""), (r.stdout, r.stderr)


def test_without_a_resolv_conf_before_there_is_none_after(world, tunnels_bin):
    s = SystemWorld(world, tunnels_bin)
    s.resolv.unlink()
    s.start()
    assert "nameserver 127.0.0.1\n" in s.resolv.read_text()
    assert s.stop() == 0
    assert not os.path.lexists(s.resolv)
    assert not os.path.lexists(s.backup)


def test_cleanup_leaves_a_running_instance_alone(world, tunnels_bin):
    s = SystemWorld(world, tunnels_bin)
    s.start()
    r = s.cleanup()
    assert r.returncode == 0, r.stderr
    assert "running tunnels system holds it" in r.stdout
    s.assert_taken_over()
    assert s.curl("http://www.via-dante.test/").stdout == "hello from nginx\n"
    # A second instance (its port taken) fails without touching the first's.
    second = s.client.run([s.bin, "system", str(s.conf)], check=False)
    assert second.returncode != 0
    assert "Address already in use" in second.stderr
    s.assert_taken_over()
    assert s.stop() == 0
    s.assert_pristine()


def test_a_restart_keeps_every_name_at_its_address(world, tunnels_bin):
    s = SystemWorld(world, tunnels_bin)
    s.start()
    names = [f"n{i}.via-dante.test" for i in range(20)]
    before = {n: s.address(n) for n in names}
    assert len(set(before.values())) == len(names)
    assert s.stop() == 0
    t = s.start()
    wait_for_log(t, r"restored 20 saved name-to-address mappings")
    # Asked in another order: a fresh pool would hand out other addresses.
    after = {n: s.address(n) for n in reversed(names)}
    assert after == before
    # A connection to a cached address works without asking again.
    out = s.client.run(["curl", "-sS", "--fail", "--max-time", "20",
                        f"http://{before[names[3]]}/"]).stdout
    assert out == "hello from nginx\n"
    assert s.stop() == 0
    # Another privateAddresses: the saved mappings mean nothing there.
    s.write_config(".via-dante.test: dante\n", extra="privateAddresses: 10.99.0.0/16\n")
    t = s.start()
    wait_for_log(t, r"discarded the saved mappings .*: it is for privateAddresses "
                    r"198\.18\.0\.0/15, not 10\.99\.0\.0/16")
    assert s.address(names[0]).startswith("10.99.")
    assert s.stop() == 0


def test_names_mapped_just_before_a_kill_9_keep_their_addresses(world, tunnels_bin):
    """The mappings file is rewritten every 10 s; a mapping made since then
    is on disk before its address is answered, so SIGKILL loses none."""
    s = SystemWorld(world, tunnels_bin)
    s.start()
    names = [f"k{i}.via-dante.test" for i in range(5)]
    before = {n: s.address(n) for n in names}
    s.stop(signal.SIGKILL)
    t = s.start()
    wait_for_log(t, r"restored 5 saved name-to-address mappings")
    assert {n: s.address(n) for n in reversed(names)} == before
    assert s.stop() == 0
    s.assert_pristine()


def test_sighup_adds_a_rule_while_a_100_mb_transfer_goes_on(world, tunnels_bin):
    s = SystemWorld(world, tunnels_bin, big=True)
    t = s.start()
    download = s.start_download("10M", 5)
    # Before the reload, .via-micro.test has no rule: its real address.
    assert s.address("a.via-micro.test") == "10.0.0.1"
    mark = t.mark()
    s.write_config(".via-dante.test: dante\n.via-micro.test: micro\n")
    t.signal(signal.SIGHUP)
    wait_for_log(t, r"\[CONFIG\] reloaded: 2 rules", since=mark)
    assert s.address("b.via-micro.test").startswith("198.1")
    assert s.curl("http://b.via-micro.test/").stdout == "hello from nginx\n"
    wait_for_log(t, r"b\.via-micro\.test:80 via micro", since=mark)
    s.assert_download_intact(download, 60)
    assert t.alive()
    assert s.stop() == 0
    s.assert_pristine()


def test_an_invalid_reload_is_kept_out(world, tunnels_bin):
    s = SystemWorld(world, tunnels_bin)
    t = s.start()
    before = s.address("www.via-dante.test")
    mark = t.mark()
    s.conf.write_text("rules:\n  .via-dante.test: nosuchproxy\nprivateAddresses: nonsense\n")
    t.signal(signal.SIGHUP)
    m = wait_for_log(t, r"the new configuration has errors and was not applied", since=mark)
    log = t.output()[mark:]
    # The errors themselves are in the log, with file and line.
    assert re.search(r"tunnels\.yml:\d+:\d+: error: .*nosuchproxy", log), log
    assert t.alive()
    assert s.address("www.via-dante.test") == before
    assert s.curl("http://www.via-dante.test/").stdout == "hello from nginx\n"
    wait_for_log(t, r"www\.via-dante\.test:80 via dante", since=m.end() + mark)
    assert s.stop() == 0
    s.assert_pristine()


def test_immutable_attribute_on_a_file_system_without_it_is_one_warning(world, tunnels_bin):
    # The world's files are on a tmpfs, where a user namespace cannot set
    # the attribute (no CAP_LINUX_IMMUTABLE there).
    s = SystemWorld(world, tunnels_bin, immutable=True)
    t = s.start()
    s.assert_taken_over()
    warnings = [line for line in t.output().splitlines() if re.search(r"immutable[: ]", line)]
    assert len(warnings) == 1, warnings
    assert "[DNS]" in warnings[0]
    assert s.curl("http://www.via-dante.test/").stdout == "hello from nginx\n"
    assert s.stop() == 0
    s.assert_pristine()


def test_sigterm_lets_a_live_connection_finish(world, tunnels_bin):
    s = SystemWorld(world, tunnels_bin, big=True)
    t = s.start()
    download = s.start_download("40M", 20)
    address = s.address("other.via-dante.test")
    t.signal(signal.SIGTERM)
    wait_for_log(t, r"stopping on SIGTERM; waiting up to 10 s for 1 live connections")
    # resolv.conf is given back at once; new connections are refused.
    wait_until(s.resolv_is_original, timeout=5, what="resolv.conf given back")
    r = s.client.run(["curl", "-sS", "--max-time", "5", f"http://{address}/"], check=False)
    assert r.returncode != 0
    s.assert_download_intact(download, 30)
    t.popen.wait(timeout=15)
    assert t.returncode == 0
    s.assert_pristine()


def test_without_cap_net_admin_nothing_changes(world, tunnels_bin):
    require("setpriv", "util-linux")
    s = SystemWorld(world, tunnels_bin)
    r = s.client.run(["setpriv", "--inh-caps=-net_admin", "--bounding-set=-net_admin",
                      s.bin, "system", str(s.conf)], check=False)
    assert r.returncode == 1
    # The configuration's own warnings aside, one sentence.
    lines = [line for line in r.stderr.splitlines() if line.strip() and ": warning: " not in line]
    assert len(lines) == 1, r.stderr
    assert "needs CAP_NET_ADMIN" in lines[0] and "nothing was changed" in lines[0]
    s.assert_pristine()
    assert not s.state.exists()
