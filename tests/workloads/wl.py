"""wl.py: the protocol of wl.h for the Python workloads (imported from their directory).

run(verify, corrupt, work) prints "READY <pid>", then loops: work(), and on
  SIGUSR1 -> verify() (None: pass, else the reason), print "PASS <n>" or "FAIL <reason>";
  SIGUSR2 -> the same, then exit 0 on pass, 1 on fail;
  SIGTERM -> corrupt(), then as SIGUSR2 (the check must notice: exit 1).
"""
import os
import signal
import sys
import time


def run(verify, corrupt, work=lambda: None):
    flags = {"check": False, "exit": False, "corrupt": False}

    def on_term(signum, frame):
        flags["corrupt"] = True
        flags["exit"] = True

    signal.signal(signal.SIGUSR1, lambda s, f: flags.__setitem__("check", True))
    signal.signal(signal.SIGUSR2, lambda s, f: flags.__setitem__("exit", True))
    signal.signal(signal.SIGTERM, on_term)
    print(f"READY {os.getpid()}", flush=True)
    checks = 0
    while True:
        work()
        if flags["check"] or flags["exit"]:
            exiting = flags["exit"]
            flags["check"] = False
            if flags["corrupt"]:
                corrupt()
            reason = verify()
            if reason is None:
                checks += 1
                print(f"PASS {checks}", flush=True)
            else:
                print(f"FAIL {reason}", flush=True)
            if exiting:
                sys.exit(0 if reason is None else 1)
        time.sleep(0.02)
