"""The command line of `tunnels run` as a user meets it: options before the
command, the usage line when `--` is missing, and the processes a program
leaves in the sandbox."""

from __future__ import annotations

import pytest

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
