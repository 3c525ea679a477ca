#!/usr/bin/env python3
"""Binds an sd_notify socket and waits (with a deadline) for READY=1, as systemd would."""
import socket
import sys

path, deadline = sys.argv[1], float(sys.argv[2])
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.bind(path)
sock.settimeout(deadline)
try:
    while True:
        if b"READY=1" in sock.recv(4096).split(b"\n"):
            sys.exit(0)
except socket.timeout:
    sys.exit(1)
