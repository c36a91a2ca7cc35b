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
import struct

import sys

sys.dont_write_bytecode = True  # nothing written into the source tree
import wl  # noqa: E402

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


def work():
    global counter
    counter += 1


def corrupt():
    d[N // 2] = "corrupted"


wl.run(verify, corrupt, work)
