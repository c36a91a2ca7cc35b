"""Options of IP sockets set once and read back by every check (tests/net_state.rs):
IP_OPTIONS (a router alert), SO_TXTIME, SO_TIMESTAMPING, SO_TIMESTAMP_NEW and UDP_ENCAP
on a UDP socket; sticky IPv6 hop-by-hop and destination options and IPV6_FLOWINFO_SEND
on an IPv6 one; TCP_FASTOPEN_CONNECT on a TCP socket not connected yet."""
import os
import socket
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wl  # noqa: E402

u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
v = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
PADN = b"\x00\x00\x01\x04\x00\x00\x00\x00"
SETTINGS = [
    (u, socket.SOL_IP, socket.IP_OPTIONS, b"\x94\x04\x00\x00"),
    (u, socket.SOL_SOCKET, 61, struct.pack("iI", 1, 0)),  # SO_TXTIME, CLOCK_MONOTONIC
    (u, socket.SOL_SOCKET, 37, struct.pack("ii", 0x18, 0)),  # SO_TIMESTAMPING
    (u, socket.SOL_SOCKET, 63, struct.pack("i", 1)),  # SO_TIMESTAMP_NEW
    (u, socket.IPPROTO_UDP, 100, struct.pack("i", 2)),  # UDP_ENCAP, ESP in UDP
    (v, socket.IPPROTO_IPV6, 54, PADN),  # IPV6_HOPOPTS
    (v, socket.IPPROTO_IPV6, 59, PADN),  # IPV6_DSTOPTS
    (v, socket.IPPROTO_IPV6, 33, struct.pack("i", 1)),  # IPV6_FLOWINFO_SEND
    (t, socket.SOL_TCP, 30, struct.pack("i", 1)),  # TCP_FASTOPEN_CONNECT
]
for s, level, name, value in SETTINGS:
    s.setsockopt(level, name, value)
WANT = [(s, level, name, s.getsockopt(level, name, 256)) for s, level, name, _ in SETTINGS]


def verify():
    for s, level, name, want in WANT:
        got = s.getsockopt(level, name, 256)
        if got != want:
            return f"option {level}/{name}: {got.hex()}, want {want.hex()}"
    return None


def corrupt():
    v.setsockopt(socket.IPPROTO_IPV6, 54, b"")


if verify() is not None:
    print("SETUP-ERROR", verify(), flush=True)
    sys.exit(2)
wl.run(verify, corrupt)
