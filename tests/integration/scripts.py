"""Small Python programs that tests run in the world's hosts with
`python3 -c SCRIPT ARGS...`, shared by the test files that need them."""

# Accepts on argv[1]:argv[2] and echoes the first 100 bytes of each
# connection back, for thousands of connections at once.
ECHO_SERVER = r"""
import asyncio, resource, sys
_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
async def handle(r, w):
    data = await r.read(100)
    w.write(data); await w.drain(); w.close()
async def main():
    server = await asyncio.start_server(handle, sys.argv[1], int(sys.argv[2]), backlog=4096)
    await server.serve_forever()
asyncio.run(main())
"""

# Opens argv[3] connections to argv[1]:argv[2] at once, each sending a
# message and expecting it back; prints how many succeeded and the first
# distinct errors.
MANY_CLIENTS = r"""
import asyncio, resource, sys
_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
N = int(sys.argv[3])
async def one(i):
    r, w = await asyncio.open_connection(sys.argv[1], int(sys.argv[2]))
    msg = f"hello {i}".encode()
    w.write(msg); await w.drain()
    data = await r.read(100)
    w.close()
    return data == msg
async def main():
    results = await asyncio.gather(*(one(i) for i in range(N)), return_exceptions=True)
    ok = sum(1 for x in results if x is True)
    errors = {repr(x) for x in results if x is not True}
    print(ok, sorted(errors)[:5])
asyncio.run(main())
"""

# Connects to argv[1]:argv[2], sends a request, and prints how the connection
# ended ("data", "eof", "reset", "refused" or "timeout") and after how many
# milliseconds; argv[3], if given, is the timeout in seconds (default 10).
REFUSAL_PROBE = r"""
import socket, sys, time
start = time.monotonic()
timeout = float(sys.argv[3]) if len(sys.argv) > 3 else 10
try:
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=timeout)
    c.sendall(b"GET / HTTP/1.0\r\n\r\n")
    data = c.recv(100)
    outcome = "data" if data else "eof"
except ConnectionResetError:
    outcome = "reset"
except ConnectionRefusedError:
    outcome = "refused"
except socket.timeout:
    outcome = "timeout"
print(outcome, round((time.monotonic() - start) * 1000))
"""

# Echoes every byte back, for as long as the client stays.
ECHO_FOREVER_SERVER = r"""
import asyncio, sys
async def handle(r, w):
    while (data := await r.read(4096)):
        w.write(data); await w.drain()
    w.close()
async def main():
    server = await asyncio.start_server(handle, sys.argv[1], int(sys.argv[2]))
    await server.serve_forever()
asyncio.run(main())
"""

# Connects to argv[1]:argv[2]; sends a byte every argv[3] seconds for argv[4]
# seconds (each echoed back), then sends nothing and waits up to 30 s for the
# connection to end. Prints how it ended and how long after the last byte.
IDLE_CLIENT = r"""
import socket, sys, time
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)
every, busy = float(sys.argv[3]), float(sys.argv[4])
start = time.monotonic()
while True:
    c.sendall(b"x")
    assert c.recv(1) == b"x"
    if time.monotonic() - start >= busy:
        break
    time.sleep(every)
last = time.monotonic()
try:
    end = "eof" if c.recv(64) == b"" else "data"
except ConnectionResetError:
    end = "reset"
except socket.timeout:
    end = "still open"
print(end, round(time.monotonic() - last, 2))
"""
