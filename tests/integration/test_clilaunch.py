"""The command line of `tunnels run` as a user meets it: options before the
command, the usage line when `--` is missing, and the processes a program
leaves in the sandbox."""

from __future__ import annotations

import re
import signal

import pytest

from world import wait_for_log

CONFIG = """
rules:
  .example.test: block
"""


@pytest.fixture
def outer(world):
    host = world.host("outer")
    host.use_nameserver("127.0.0.1")
    conf = world.tmp_path / "tunnels.yml"
    conf.write_text(CONFIG)
    return host, conf


def test_options_before_run_and_leftover_processes_are_counted(outer, tunnels_bin):
    host, conf = outer
    # -v and -c before the command name; the program leaves two sleeps.
    r = host.run([str(tunnels_bin), "-v", "-c", str(conf), "run", "--", "sh", "-c",
                  "sleep 60 & sleep 60 & exit 3"], timeout=30, check=False)
    assert r.returncode == 3, r.stderr
    assert "ending 2 processes left in the sandbox" in r.stderr
    # -v names the files the rules came from.
    assert f"[CONFIG] loaded {conf}" in r.stderr
    # The same at the default level, without -v: still counted.
    r = host.run([str(tunnels_bin), "run", "-c", str(conf), "--", "sh", "-c", "sleep 60 & :"],
                 timeout=30, check=False)
    assert r.returncode == 0, r.stderr
    assert "ending 1 process left in the sandbox" in r.stderr
    assert "[CONFIG] loaded" not in r.stderr


def test_missing_dashes_gets_the_usage_line(outer, tunnels_bin):
    host, conf = outer
    r = host.run([str(tunnels_bin), "run", "-c", str(conf), "curl", "-s", "http://a.test/"],
                 timeout=30, check=False)
    assert r.returncode == 2
    assert "usage: tunnels run [OPTIONS] -- CMD [ARGS...]" in r.stderr
    assert "put -- before the program" in r.stderr


def test_a_second_system_on_the_same_port_names_the_first(outer, tunnels_bin, world):
    host, _ = outer
    configs = []
    for n in (1, 2):
        configs.append((world.tmp_path / f"system{n}.yml", world.tmp_path / f"state{n}"))
    first_conf, first_state = configs[0]
    first_conf.write_text(f"dnsBindAddress: 127.0.0.1\ndnsPort: 0\noverwriteResolvconf: false\n"
                          f"upstreamDns: 127.0.0.1:9\nstateDirectory: {first_state}\n")
    first = host.spawn([str(tunnels_bin), "system", str(first_conf)], name="first",
                       line_buffered=False)  # stdbuf preloads a library: ASan refuses
    m = wait_for_log(first, r"\[DNS\] listening on udp 127\.0\.0\.1:(\d+)", timeout=10)
    second_conf, second_state = configs[1]
    second_conf.write_text(f"dnsBindAddress: 127.0.0.1\ndnsPort: {m.group(1)}\n"
                           f"overwriteResolvconf: false\nupstreamDns: 127.0.0.1:9\n"
                           f"stateDirectory: {second_state}\n")
    r = host.run([str(tunnels_bin), "system", str(second_conf)], timeout=30, check=False)
    assert r.returncode != 0
    assert re.search(r"tunnels, pid \d+, is already running there", r.stderr), r.stderr
    assert "systemd-resolved" not in r.stderr
    assert first.alive()


def test_a_rejected_reload_says_so_once(outer, tunnels_bin, world):
    host, _ = outer
    conf = world.tmp_path / "reload.yml"
    options = (f"dnsBindAddress: 127.0.0.1\ndnsPort: 0\noverwriteResolvconf: false\n"
               f"upstreamDns: 127.0.0.1:9\nstateDirectory: {world.tmp_path / 'state-reload'}\n")
    conf.write_text(options)
    t = host.spawn([str(tunnels_bin), "system", "-v", str(conf)], name="reload",
                   line_buffered=False)
    wait_for_log(t, r"\[DNS\] listening on udp", timeout=10)
    mark = t.mark()
    conf.write_text(options + "rules:\n  a.test: nosuchproxy\n")
    t.signal(signal.SIGHUP)
    wait_for_log(t, r"was not applied", since=mark)
    # Mark again and ask for a valid reload: everything up to its line is
    # the rejected reload's output.
    conf.write_text(options)
    second = t.mark()
    t.signal(signal.SIGHUP)
    wait_for_log(t, r"\[CONFIG\] reloaded", since=second)
    log = t.output()[mark:second]
    assert log.count("was not applied") == 1, log
