"""Reloads of tunnels system that must not stop service: a large
configuration is read off the I/O thread while DNS keeps answering, and a
directory that yields no configuration file on reload is rejected (fail
closed) while the running rules stay.

The world is test_system.py's: srv (10.0.0.1) with dnsmasq, nginx and
dante; client (10.0.0.2) runs tunnels system on a configuration directory."""

from __future__ import annotations

import signal

from test_system import SystemWorld
from world import wait_for_log


def test_reloads_keep_serving_and_fail_closed(world, tunnels_bin):
    s = SystemWorld(world, tunnels_bin)
    confdir = world.tmp_path / "conf.d"
    confdir.mkdir()
    main = confdir / "main.yml"
    s.conf.rename(main)
    s.conf = main
    s.tunnels = s.client.spawn([s.bin, "system", "-v", str(confdir)], name="tunnels",
                               line_buffered=False)
    t = s.tunnels
    wait_for_log(t, r"\[DNS\] listening on udp 127\.0\.0\.1:53")
    before = s.address("www.via-dante.test")
    assert before.startswith("198.1")

    # A large second file: its reading and compiling takes a while.
    big = confdir / "big.yml"
    with open(big.with_suffix(".tmp"), "w") as f:
        f.write("rules:\n")
        for i in range(300_000):
            f.write(f"  n{i}.big.test: dante\n")
    big.with_suffix(".tmp").rename(big)
    mark = t.mark()
    t.signal(signal.SIGHUP)
    answered = 0
    while "[CONFIG] reloaded" not in t.output()[mark:]:
        assert t.alive()
        assert s.address(f"d{answered}.via-dante.test").startswith("198.1")
        answered += 1
        assert answered < 100_000
    wait_for_log(t, r"\[CONFIG\] reloaded: 300001 rules", since=mark)
    # DNS answered while the reload ran (it took longer than one query).
    assert answered >= 1, t.output()[mark:]
    assert s.address("n7.big.test").startswith("198.1")

    # Emptied: no configuration file is left. The reload is refused and
    # the ruled names keep their fake addresses.
    big.unlink()
    main.rename(world.tmp_path / "main.yml.away")
    mark = t.mark()
    t.signal(signal.SIGHUP)
    wait_for_log(t, r"the new configuration has errors and was not applied", since=mark)
    assert "no configuration file" in t.output()[mark:]
    assert s.address("www.via-dante.test") == before
    assert s.address("new.via-dante.test").startswith("198.1")
    assert s.address("n8.big.test").startswith("198.1")
    assert s.stop() == 0
    s.assert_pristine()
