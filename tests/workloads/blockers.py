#!/usr/bin/env python3
"""blockers.py: a process tree holding one of each thing ckpt cannot dump yet, for
`ckpt check -t` to find every one of them.

Usage: python3 blockers.py WORKDIR   (protocol of wl.h: READY <pid>, SIGUSR1 -> PASS <n>)
Holds: a second thread, a TCP socket listening on 127.0.0.1 (port 0: the kernel picks),
a UDP socket on 127.0.0.1, a listening unix stream socket WORKDIR/blockers.sock (all
three dumpable), a netlink netfilter socket (refused), an anonymous pipe shared with its forked child, an eventfd, an epoll fd and an inotify fd.
Prints "PORT <tcp port>", "UDP <udp port>" and "CHILD <pid>" before READY.
"""
import ctypes
import os
import select
import signal
import socket
import sys
import threading
import time

workdir = sys.argv[1]
tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
tcp.bind(("127.0.0.1", 0))
tcp.listen()
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind(("127.0.0.1", 0))
path = os.path.join(workdir, "blockers.sock")
unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
unix.bind(path)
unix.listen()
netlink = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)  # NETLINK_NETFILTER: refused
r, w = os.pipe()
ev = os.eventfd(0)
ep = select.epoll()
libc = ctypes.CDLL(None, use_errno=True)
ino = libc.inotify_init1(0)
if ino < 0:
    print(f"SETUP-ERROR inotify_init1: errno {ctypes.get_errno()}", flush=True)
    sys.exit(1)

child = os.fork()
if child == 0:
    while True:
        time.sleep(1000)

stop = threading.Event()
worker = threading.Thread(target=stop.wait, daemon=True)
worker.start()

checks = 0
wanted = False


def on_usr1(_sig, _frame):
    global wanted
    wanted = True


signal.signal(signal.SIGUSR1, on_usr1)
print(f"PORT {tcp.getsockname()[1]}", flush=True)
print(f"UDP {udp.getsockname()[1]}", flush=True)
print(f"CHILD {child}", flush=True)
print(f"READY {os.getpid()}", flush=True)
while True:
    time.sleep(0.01)
    if wanted:
        wanted = False
        checks += 1
        ok = worker.is_alive() and tcp.fileno() >= 0 and os.waitpid(child, os.WNOHANG) == (0, 0)
        print(f"PASS {checks}" if ok else "FAIL the tree lost a part", flush=True)
