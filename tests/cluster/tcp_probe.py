#!/usr/bin/env python3
"""Round trips and a stream over one TCP connection between two cluster hosts.

  tcp_probe.py serve ADDR PORT          answers each 1-byte message, swallows the rest
  tcp_probe.py probe ADDR PORT ROUNDS MB  prints {"rtt_us": [...], "stream_mb_per_s": X}
"""
import json
import socket
import sys
import time


def serve(addr, port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.listen(1)
    print("listening", flush=True)
    c, _ = s.accept()
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while True:
        d = c.recv(1 << 20)
        if not d:
            return
        if d == b"?":
            c.sendall(b"!")
        elif d.endswith(b"."):  # the stream's end: acknowledged once all of it is here
            c.sendall(b"done")


def probe(addr, port, rounds, mb):
    c = socket.create_connection((addr, port), timeout=30)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    rtt = []
    for _ in range(rounds):
        t = time.perf_counter()
        c.sendall(b"?")
        c.recv(1)
        rtt.append((time.perf_counter() - t) * 1e6)
    blob = b"\0" * (1 << 20)
    t = time.perf_counter()
    for _ in range(mb):
        c.sendall(blob)
    c.sendall(b".")
    c.recv(4)
    took = time.perf_counter() - t
    print(json.dumps({"rtt_us": sorted(rtt), "stream_mb_per_s": mb * 1.048576 / took}))


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2], int(sys.argv[3]))
    else:
        probe(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
