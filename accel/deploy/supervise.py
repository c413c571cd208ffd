"""Run one command and record how it ended: the parent of a local deployment's server.

    python supervise.py DIR -- accel serve ...

Run as a script (stdlib only, so it does not import accel): starts the command with the
same stdout/stderr, writes its pid to DIR/server.pid, passes SIGTERM / SIGINT / SIGHUP on
to it, and when it ends writes DIR/exit.json ({"returncode": N}, negative: killed by that
signal), so `accel deployments` can tell a stopped server from a crashed one.
"""

import json
import os
import signal
import subprocess
import sys
import time


def write_atomically(path: str, text: str) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: supervise.py DIR -- COMMAND...", file=sys.stderr)
        return 2
    directory, command = argv[0], argv[2:]
    child = subprocess.Popen(command, stdin=subprocess.DEVNULL)

    def forward(signum, _frame):
        try:
            child.send_signal(signum)
        except ProcessLookupError:
            pass
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    write_atomically(os.path.join(directory, "server.pid"), f"{child.pid}\n")
    returncode = child.wait()
    write_atomically(os.path.join(directory, "exit.json"),
                     json.dumps({"returncode": returncode, "ended": time.time()}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
