#!/usr/bin/env python3
"""threads.py: a Python program whose threads keep their state across a checkpoint.

Usage: python3 threads.py WORKDIR   (same protocol as the C workloads, see wl.h)
Threads: a counter thread (a list it appends to, a threading.local value, its native
id), a thread blocked in Event.wait() until main sets the event, and a thread in a
Queue.get() fed by main. A check waits until each has made progress and verifies what
each recorded about itself; it also joins a short-lived thread started at the check.
"""
import os
import queue
import threading
import time

import sys

sys.dont_write_bytecode = True  # nothing written into the source tree
import wl  # noqa: E402

local = threading.local()
bad = []
state = {"count": 0, "items": [], "events": 0, "queued": 0}
native = {}
ev = threading.Event()
q = queue.Queue()


def counter():
    local.name = "counter"
    native["counter"] = threading.get_native_id()
    while True:
        state["count"] += 1
        state["items"].append(state["count"] * 3)
        if local.name != "counter" or threading.get_native_id() != native["counter"]:
            bad.append("counter thread lost its local or native id")
        time.sleep(0.01)


def waiter():
    local.name = "waiter"
    native["waiter"] = threading.get_native_id()
    while True:
        ev.wait()
        ev.clear()
        state["events"] += 1
        if local.name != "waiter":
            bad.append("waiter thread lost its local")


def consumer():
    native["consumer"] = threading.get_native_id()
    expect = 0
    while True:
        v = q.get()
        if v != expect:
            bad.append(f"queue gave {v}, expected {expect}")
        expect += 1
        state["queued"] += 1


for fn in (counter, waiter, consumer):
    threading.Thread(target=fn, daemon=True).start()
fed = 0


def verify():
    global fed
    before = dict(state)
    deadline = time.time() + 10
    while True:
        ev.set()
        q.put(fed)
        fed += 1
        time.sleep(0.02)
        if all(state[k] > before[k] for k in ("count", "events", "queued")):
            break
        if time.time() > deadline:
            return f"threads made no progress: {before} -> {state}"
    items = state["items"]
    if any(items[i] != (i + 1) * 3 for i in range(len(items) - 1)):
        return "the counter thread's list is wrong"
    if bad:
        return bad[0]
    tasks = set(int(t) for t in os.listdir("/proc/self/task"))
    if not set(native.values()) <= tasks:
        return f"native ids {native} not all in /proc/self/task {sorted(tasks)}"
    out = []
    t = threading.Thread(target=lambda: out.append(len(items)))
    t.start()
    t.join(10)
    if t.is_alive() or not out:
        return "a new thread could not be started and joined"
    return None


while len(native) < 3:
    time.sleep(0.01)


def corrupt():
    state["items"][0] = -1


wl.run(verify, corrupt)
