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

# Reads until the client shuts down its side, then answers with the number
# and SHA-256 of the bytes it got, in pieces, and closes.
HALF_CLOSE_SERVER = r"""
import hashlib, socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(64)
while True:
    c, _ = s.accept()
    h, n = hashlib.sha256(), 0
    while (b := c.recv(65536)):
        h.update(b); n += len(b)
    answer = f"{n} {h.hexdigest()}\n".encode() * 1000
    c.sendall(answer); c.close()
"""

HALF_CLOSE_CLIENT = r"""
import hashlib, os, socket, sys
data = os.urandom(5 * 1024 * 1024)
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20)
c.sendall(data); c.shutdown(socket.SHUT_WR)
got = b""
while (b := c.recv(65536)):
    got += b
line = f"{len(data)} {hashlib.sha256(data).hexdigest()}\n".encode()
print("ok" if got == line * 1000 else f"bad: {len(got)} bytes")
"""

# Sends data to each client until the client is gone, then prints "gone N"
# (the bytes it sent), so that a test sees the far end of a connection end.
STREAM_SERVER = r"""
import socket, sys, threading
def serve(c):
    n, chunk = 0, b"x" * 65536
    try:
        while True:
            n += c.send(chunk)
    except OSError:
        print("gone", n, flush=True)
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(64)
while True:
    threading.Thread(target=serve, args=(s.accept()[0],), daemon=True).start()
"""

# Reads argv[3] bytes from argv[1]:argv[2], then resets the connection
# (SO_LINGER 0) instead of closing it; prints "ok".
RESETTING_CLIENT = r"""
import socket, struct, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20)
want, got = int(sys.argv[3]), 0
while got < want:
    b = c.recv(65536)
    assert b, "the stream ended early"
    got += len(b)
c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
c.close()
print("ok")
"""
