#!/usr/bin/env python3
"""state.py: a Python interpreter's heap survives a checkpoint.

Usage: python3 state.py WORKDIR   (same protocol as the C workloads, see wl.h)
  SIGUSR1 -> verify, print "PASS <n>" or "FAIL <reason>"
  SIGUSR2 -> verify, print as above, exit 0 on pass, 1 on fail
  SIGTERM -> corrupt one entry on purpose, verify (must fail), exit 1
State: a dict of 200k int -> str entries, a list of 200k floats, a bytearray of
4 MiB, a set, nested tuples; a SHA-256 over all of it taken at start; a counter bumped
by the main loop. Verification regenerates every value and recomputes the digest.
"""
import hashlib
import os
import signal
import struct
import sys
import time

N = 200_000


def value(i):
    return f"v{i * 7919 % 1000003:07d}-{i}"


def fval(i):
    return i * 0.5 + 1.0 / (i + 1)


def digest(d, lst, blob, st, nested):
    h = hashlib.sha256()
    for k in range(N):
        h.update(d[k].encode())
    h.update(struct.pack(f"{len(lst)}d", *lst))
    h.update(bytes(blob))
    h.update(repr(sorted(st)).encode())
    h.update(repr(nested).encode())
    return h.hexdigest()


d = {i: value(i) for i in range(N)}
lst = [fval(i) for i in range(N)]
blob = bytearray(os.urandom(16)) * (4 * 1024 * 1024 // 16)
st = set(range(0, 3 * N, 3))
nested = tuple((i, str(i), (i * 1.5,)) for i in range(1000))
start_digest = digest(d, lst, blob, st, nested)
pid0 = os.getpid()
counter = 0
checks = 0

flags = {"check": False, "exit": False, "corrupt": False}


def on_usr1(signum, frame):
    flags["check"] = True


def on_usr2(signum, frame):
    flags["exit"] = True


def on_term(signum, frame):
    flags["corrupt"] = True
    flags["exit"] = True


signal.signal(signal.SIGUSR1, on_usr1)
signal.signal(signal.SIGUSR2, on_usr2)
signal.signal(signal.SIGTERM, on_term)


def verify():
    if os.getpid() != pid0:
        return f"pid {os.getpid()} != {pid0}"
    if len(d) != N or len(lst) != N:
        return f"sizes changed: dict {len(d)} list {len(lst)}"
    for i in range(N):
        if d[i] != value(i):
            return f"dict entry {i} is {d[i]!r}"
        if lst[i] != fval(i):
            return f"list entry {i} is {lst[i]!r}"
    if len(st) != N or any(x % 3 for x in st):
        return "set changed"
    got = digest(d, lst, blob, st, nested)
    if got != start_digest:
        return f"digest {got} != {start_digest}"
    if counter <= 0:
        return "main loop never ran"
    return None


print(f"READY {pid0}", flush=True)
while True:
    counter += 1
    if flags["check"] or flags["exit"]:
        exiting = flags["exit"]
        flags["check"] = False
        if flags["corrupt"]:
            d[N // 2] = "corrupted"
        reason = verify()
        if reason is None:
            checks += 1
            print(f"PASS {checks}", flush=True)
        else:
            print(f"FAIL {reason}", flush=True)
        if exiting:
            sys.exit(0 if reason is None else 1)
    time.sleep(0.02)
