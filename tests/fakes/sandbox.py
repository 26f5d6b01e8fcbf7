"""`make sandbox`: the three fake vendor servers on fixed loopback ports, for trying every connection by hand.

Start it, then start the dashboard with the printed settings (`make run` in another shell with them exported) and
use the sandbox credentials each fake module documents (also listed in the README).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

FAKES = [
    ("SolarEdge V2", "tests.fakes.solaredge_v2", 8701, "DATACONN_SOLAREDGE_BASE_URL", "/v2"),
    ("SolarEdge V1", "tests.fakes.solaredge_v1", 8702, "DATACONN_SOLAREDGE_V1_BASE_URL", ""),
    ("Enphase", "tests.fakes.enphase", 8703, "DATACONN_ENPHASE_BASE_URL", "/api/v4"),
]


def main() -> int:
    processes = [
        subprocess.Popen([sys.executable, "-m", module, "--port", str(port)]) for _, module, port, _, _ in FAKES
    ]
    print("Fake vendor servers on loopback. Start the dashboard with:")
    for name, _, port, variable, path in FAKES:
        print(f"  export {variable}=http://127.0.0.1:{port}{path}    # {name}")
    print("  export DATACONN_ENPHASE_AUTH_URL=http://127.0.0.1:8703/oauth")
    print("Press Ctrl+C to stop.")
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while not stopping and all(p.poll() is None for p in processes):
        time.sleep(0.5)
    for process in processes:
        process.terminate()
    for process in processes:
        process.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
