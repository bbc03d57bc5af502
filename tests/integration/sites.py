"""The two-host world that the end-to-end tests of the engine, the ssh proxy
and system mode start from.

Host "client" (10.0.0.2), where tunnels runs, is linked to host "srv"
(10.0.0.1), where dnsmasq answers every *.test name with 10.0.0.1 (logging
every query) and nginx serves index.html ("hello from nginx") and, when
asked for, big.bin: big_size (SIZE unless told) random bytes whose SHA-256
is `big_sha`. Each test module adds its proxies and its tunnels
configuration; `start_system` runs `tunnels system` on client as its
resolver. bench/sandbox_bench.py measures in the same world."""

from __future__ import annotations

import hashlib
import os
from typing import Any, Iterable, Mapping

from peers import Nginx
from world import Dnsmasq, wait_for_log

SIZE = 100 * 1024 * 1024
CHUNK = 16 << 20  # big.bin is written in pieces, so memory stays small
HELLO = "hello from nginx\n"
CLIENT_IP, SRV_IP = "10.0.0.2", "10.0.0.1"
# The head of every configuration of `tunnels system` on client: srv's
# dnsmasq upstream, tunnels' DNS server on client's 127.0.0.1:53, the
# world's resolv.conf left alone (start_system points client at tunnels).
SYSTEM_CONFIG = ("upstreamDns: 10.0.0.1\ndnsBindAddress: 127.0.0.1\ndnsPort: 53\n"
                 "overwriteResolvconf: false\n")
READY = r"\[DNS\] listening on udp 127\.0\.0\.1:53"


class TwoHosts:
    def __init__(self, world, *, big: bool = False, nxdomain: Iterable[str] = (),
                 records: Mapping[str, Any] | None = None, client: str = "client",
                 big_size: int = SIZE):
        """nxdomain: names dnsmasq answers with NXDOMAIN instead; records:
        more {name: ip or [ips]} for dnsmasq (answered in the reverse order
        of each list); client: the client host's name; big_size: the size
        of big.bin."""
        self.world = world
        self.client = world.host(client)
        self.srv = world.host("srv")
        world.link(self.client, self.srv, f"{CLIENT_IP}/24", f"{SRV_IP}/24")
        self.dnsmasq = Dnsmasq(self.srv, SRV_IP, records={"test": SRV_IP, **(records or {})},
                               local=list(nxdomain))
        self.srv.use_nameserver(SRV_IP)
        www = world.tmp_path / "www"
        www.mkdir()
        (www / "index.html").write_text(HELLO)
        self.big_sha = None
        if big:
            sha = hashlib.sha256()
            with open(www / "big.bin", "wb") as f:
                for left in range(big_size, 0, -CHUNK):
                    chunk = os.urandom(min(left, CHUNK))
                    sha.update(chunk)
                    f.write(chunk)
            self.big_sha = sha.hexdigest()
        self.nginx = Nginx(self.srv, SRV_IP, 80, www)

    def start_system(self, tunnels_bin, config: str, *, verbosity: str = "-v",
                     prefix: Iterable[str] = ()):
        """`tunnels system` on client with `config` (a whole YAML text,
        usually SYSTEM_CONFIG + proxies and rules), once its DNS server
        listens; client then resolves through it. prefix: a wrapper."""
        conf = self.world.tmp_path / "tunnels.yml"
        conf.write_text(config)
        # tunnels writes each log line with one write(2): no stdbuf needed,
        # and stdbuf's preload would break sanitizer builds.
        tunnels = self.client.spawn([*prefix, str(tunnels_bin), "system", verbosity, str(conf)],
                                    name="tunnels", line_buffered=False)
        wait_for_log(tunnels, READY)
        self.client.use_nameserver("127.0.0.1")
        return tunnels

    def curl(self, url, *args, check=True, timeout=60):
        return self.client.run(["curl", "-sS", "--fail", "--max-time", str(timeout - 5),
                                *args, url], check=check, timeout=timeout)

    def sha_of(self, url):
        r = self.client.run(f"curl -sS --fail --max-time 100 '{url}' | sha256sum", timeout=120)
        return r.stdout.split()[0]

    def python(self, host, script, *args, timeout=60):
        return host.run(["python3", "-c", script, *map(str, args)], timeout=timeout).stdout.strip()

    def lookups_by_tunnels(self, name: str) -> list[str]:
        """The types tunnels (on client) asked the upstream DNS for `name`."""
        return sorted(q.qtype for q in self.dnsmasq.query_log()
                      if q.name == name and q.client.startswith(CLIENT_IP))

    def tunnels_resolved_locally(self, name: str) -> bool:
        """Whether tunnels (on client) asked the upstream DNS for `name`."""
        return bool(self.lookups_by_tunnels(name))
