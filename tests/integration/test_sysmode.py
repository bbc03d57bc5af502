"""tunnels system where resolv.conf is a mount point, and leftovers of an
earlier instance that cannot be undone.

Uses the two-host world of test_system.py: tunnels system runs in "client"
with resolvconfPath, resolvconfBackupPath and stateDirectory in the test's
tmpfs."""

from __future__ import annotations

import os

from test_system import ORIGINAL, READY, SystemWorld
from world import wait_for_log


def test_bind_mounted_resolv_conf_is_rewritten_and_restored_in_place(world, tunnels_bin):
    # As `ip netns exec`, Docker and podman do: a file bind-mounted over
    # resolv.conf, which rename() cannot replace (EBUSY). The mount is in
    # tunnels' own mount namespace (that of its `ip netns exec`); the test
    # sees the mounted file as `mounted`.
    s = SystemWorld(world, tunnels_bin)
    mounted = world.tmp_path / "mounted-resolv.conf"
    mounted.write_text(ORIGINAL)
    s.resolv.write_text("# under the mount\n")
    s.tunnels = s.client.spawn(
        ["sh", "-c", 'mount --bind "$0" "$1" && shift && exec "$@"', str(mounted),
         str(s.resolv), s.bin, "system", "-v", str(s.conf)],
        name="tunnels", line_buffered=False)
    wait_for_log(s.tunnels, READY, timeout=10)
    assert "nameserver 127.0.0.1\n" in mounted.read_text()
    assert s.backup.read_text() == ORIGINAL
    assert s.curl("http://www.via-dante.test/").stdout == "hello from nginx\n"
    assert s.stop() == 0
    assert mounted.read_text() == ORIGINAL
    assert s.resolv.read_text() == "# under the mount\n"
    assert not os.path.lexists(s.backup)
    assert not (s.state / "system.journal").exists()
    # Nothing left for a cleanup.
    r = s.cleanup()
    assert (r.returncode, r.stdout) == (0, ""), (r.stdout, r.stderr)


def test_a_leftover_that_cannot_be_undone_blocks_only_what_touches_it(world, tunnels_bin):
    s = SystemWorld(world, tunnels_bin)
    # A resolv.conf entry of another configuration whose restore fails (its
    # directory is gone), as a journal left by a failed undo.
    stuck_backup = world.tmp_path / "elsewhere-backup"
    stuck_backup.mkdir()
    stuck = f"resolvconf backup={stuck_backup} path={world.tmp_path}/gone/resolv.conf"
    s.state.mkdir(mode=0o755)
    (s.state / "system.journal").write_text(f"# left\n{stuck}\n")
    t = s.start()
    wait_for_log(t, r"cannot undo what an earlier instance left \(this configuration does "
                    r"not touch it")
    s.assert_taken_over()
    assert s.stop() == 0
    # This instance's own changes are undone; the stuck entry stays.
    assert not s.has_route() and not s.has_table()
    assert s.resolv_is_original()
    assert (s.state / "system.journal").read_text().splitlines()[-1] == stuck
    r = s.cleanup()
    assert r.returncode == 1 and "--forget" in r.stderr, (r.stdout, r.stderr)
    assert (s.state / "system.journal").exists()
    r = s.cleanup("--forget")
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert f"forgot, not undone: {stuck}" in r.stdout
    assert not (s.state / "system.journal").exists()


def test_a_signal_during_run_setup_stops_it_and_undoes_it(world, tunnels_bin):
    # A Ctrl-C that arrives while tunnels run sets up: delivered, blocked,
    # before tunnels even starts (a pending signal survives execve), so that
    # it is certainly there during setup without any timing.
    from test_run import RunWorld
    rw = RunWorld(world, tunnels_bin)
    marker = world.tmp_path / "the-program-ran"
    wrapper = ("import os, signal, sys\n"
               "signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGINT])\n"
               "os.kill(os.getpid(), signal.SIGINT)\n"
               "os.execv(sys.argv[1], sys.argv[1:])\n")
    r = rw.run("touch", str(marker), prefix=("python3", "-c", wrapper))
    assert r.returncode == 128 + 2, (r.stdout, r.stderr)
    assert "during setup" in r.stderr
    assert not marker.exists()
    assert rw.leftovers() == {"veth": [], "nft": [], "ip_forward": "0"}


def test_a_guardian_undoes_what_tunnels_system_started_by_hand_left(world, tunnels_bin):
    import signal
    from world import wait_until
    s = SystemWorld(world, tunnels_bin)
    s.start(unit=False)
    s.assert_taken_over()
    s.stop(signal.SIGKILL)
    # No one runs cleanup: the guardian does, once tunnels is gone.
    wait_until(lambda: not (s.state / "system.journal").exists(), timeout=10)
    s.assert_pristine()
