"""Run a command in a network namespace that has only loopback (used by ``make test``).

This proves that nothing downloads at test time and that Ray binds to 127.0.0.1. As root it
uses ``unshare -n``; otherwise ``unshare -rn`` (a user namespace). Loopback is brought up with
an ioctl, so iproute2 is not needed. Where namespaces are not allowed (some containers), it says
so and runs the command without isolation rather than not testing at all.

Usage: python tests/netns.py COMMAND [ARGS...]
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import struct
import subprocess
import sys

_MARK = "ECG_RAY_IN_NETNS"
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1


def bring_loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock.fileno(), SIOCSIFFLAGS, struct.pack("16sH", b"lo", flags | IFF_UP))


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    if os.environ.get(_MARK) == "1":
        bring_loopback_up()
        os.execvp(argv[0], argv)
    unshare = shutil.which("unshare")
    flags = ["-n"] if os.geteuid() == 0 else ["-r", "-n"]
    if unshare is not None and subprocess.run([unshare, *flags, "true"], capture_output=True).returncode == 0:
        env = dict(os.environ, **{_MARK: "1"})
        print(f"[netns] running tests in a loopback-only network namespace (unshare {' '.join(flags)})",
              flush=True)
        return subprocess.run([unshare, *flags, sys.executable, os.path.abspath(__file__), *argv],
                              env=env).returncode
    print("[netns] WARNING: cannot create a network namespace here (unshare not permitted); "
          "running tests WITHOUT network isolation", flush=True)
    return subprocess.run(argv).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
