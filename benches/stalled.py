#!/usr/bin/env python3
"""Memory a stalled connection holds in latchkey, per attack shape.

Starts the given latchkey binary (release build) on a fresh data directory, opens N
connections per shape from loopback addresses 127.0.0.10 and up (64 per address, the
default per-address cap), has each send its part of a request and stall, waits for the
server to read it all, and reports the growth of the server's resident memory (VmRSS)
divided by N. Each shape runs on a fresh server.

Usage: benches/stalled.py [BINARY] [N]    (default target/release/latchkey, 1024)
"""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/release/latchkey"
N = int(sys.argv[2]) if len(sys.argv) > 2 else 1024
ONLY = sys.argv[3].split(",") if len(sys.argv) > 3 else None
# Seconds between connections (0: as fast as they open).
PACE = float(os.environ.get("PACE", "0"))
PAD = "X-Pad: " + "a" * 8000 + "\r\n"


def post(headers, length, sent, path="/login"):
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {length}\r\n{headers}\r\n"
    ).encode()
    return head + b"a" * sent


def chunked(headers, sent):
    head = (
        "POST /login HTTP/1.1\r\nHost: x\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Transfer-Encoding: chunked\r\n{headers}\r\n"
    ).encode()
    body = b""
    while len(body) + 1024 < sent:
        body += b"400\r\n" + b"a" * 1024 + b"\r\n"
    return head + body


SHAPES = {
    # (what it sends, then stalls)
    "connected, nothing sent": b"",
    "small GET head, unfinished": b"GET / HTTP/1.1\r\nHost: x\r\n",
    "32 KiB head of unread fields, unfinished": (
        "GET / HTTP/1.1\r\nHost: x\r\n" + PAD * 4
    ).encode()[: 32 * 1024 - 16],
    "the attack test: 31 KiB head (unread fields), 16383 of 16384 body bytes": post(
        PAD * 3 + "X-P: " + "b" * 7000 + "\r\n", 16384, 16383
    ),
    "31 KiB head of Cookie fields, 16383 of 16384 body bytes": post(
        ("Cookie: c=" + "b" * 8000 + "\r\n") * 3 + "Cookie: d=" + "b" * 7000 + "\r\n",
        16384,
        16383,
    ),
    "95 one-byte fields, 16383 of 16384 body bytes": post(
        "".join(f"a{i}: b\r\n" for i in range(95)), 16384, 16383
    ),
    "95 fields of 330 bytes, 16383 of 16384 body bytes": post(
        "".join(f"Cookie: {i:03}" + "c" * 320 + "\r\n" for i in range(95)), 16384, 16383
    ),
    "small head, 1 of 16384 body bytes": post("", 16384, 1),
    "small head, chunked, 15 KiB sent": chunked("", 15 * 1024),
}


def kib(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def start(data):
    port_sock = socket.socket()
    port_sock.bind(("127.0.0.1", 0))
    port = port_sock.getsockname()[1]
    port_sock.close()
    env = dict(os.environ)
    env.update(
        LATCHKEY_HEADER_TIMEOUT="120",
        LATCHKEY_BODY_TIMEOUT="120",
        LATCHKEY_LOG="info",
        LATCHKEY_COOKIE_SECURE="false",
    )
    log = open(os.path.join(data, "log"), "w")
    proc = subprocess.Popen(
        [BIN, "serve", "--data-dir", os.path.join(data, "d"), "--listen", f"127.0.0.1:{port}"],
        env=env,
        stderr=log,
        stdout=log,
    )
    for _ in range(200):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=1)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            s.recv(100)
            s.close()
            break
        except OSError:
            time.sleep(0.05)
    time.sleep(0.5)
    return proc, port


def measure(name, payload):
    tmp = tempfile.mkdtemp(prefix="latchkey-stalled.")
    proc, port = start(tmp)
    try:
        before = kib(proc.pid)
        conns = []
        for i in range(N):
            s = socket.socket()
            s.bind((f"127.0.0.{10 + i // 64}", 0))
            s.connect(("127.0.0.1", port))
            if payload:
                s.sendall(payload)
            if PACE:
                time.sleep(PACE)
            conns.append(s)
        time.sleep(2)
        after = kib(proc.pid)
        # Everything still open and unanswered? A refusal would have been answered.
        answered = 0
        for s in conns:
            s.setblocking(False)
            try:
                if s.recv(1):
                    answered += 1
            except BlockingIOError:
                pass
        for s in conns:
            s.close()
        per = (after - before) / N
        print(f"| {name} | {len(payload)} | {per:.1f} |" + (f" ({answered} answered)" if answered else ""))
        sys.stdout.flush()
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


print(f"{BIN}, {N} connections per shape; VmRSS growth / connection")
print("| shape | bytes sent | KiB per connection |")
print("|---|---|---|")
for name, payload in SHAPES.items():
    if ONLY and not any(o in name for o in ONLY):
        continue
    measure(name, payload)
