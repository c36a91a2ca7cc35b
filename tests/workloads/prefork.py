"""prefork.py: a pre-forking server: one listening TCP socket on 127.0.0.1, made by the
parent and shared with its forked child; both accept from it and answer each client's
line with "echo <pid> <line>". Protocol of wl.py; prints "PORT <port>" and "CHILD <pid>"
before READY. The child exits once its parent is not the one it was forked by.

Check: the child is alive and holds the very socket the parent holds (same socket inode
at the same fd), which is still listening.
"""
import os
import select
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wl  # noqa: E402

lsn = socket.socket()
lsn.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
lsn.bind(("127.0.0.1", 0))
lsn.listen(8)
print(f"PORT {lsn.getsockname()[1]}", flush=True)


def serve_one():
    r, _, _ = select.select([lsn], [], [], 0)
    if not r:
        return
    try:
        c, _ = lsn.accept()
    except BlockingIOError:
        return
    c.settimeout(5)
    line = c.recv(200)
    c.sendall(b"echo %d " % os.getpid() + line)
    c.close()


lsn.setblocking(False)
parent = os.getpid()
child = os.fork()
if child == 0:
    while os.getppid() == parent:
        serve_one()
        time.sleep(0.01)
    os._exit(0)
print(f"CHILD {child}", flush=True)


def verify():
    fd = lsn.fileno()
    try:
        theirs = os.readlink(f"/proc/{child}/fd/{fd}")
    except OSError as e:
        return f"child {child} fd {fd}: {e}"
    mine = os.readlink(f"/proc/self/fd/{fd}")
    if theirs != mine:
        return f"child holds {theirs} at fd {fd}, the parent {mine}"
    if lsn.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) != 1:
        return "not listening"
    return None


def corrupt():
    global child
    child = 1


wl.run(verify, corrupt, serve_one)
