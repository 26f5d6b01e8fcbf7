"""`make sandbox`: the three fake vendor servers on fixed loopback ports, for trying every connection by hand, and
an MQTT broker (Mosquitto, when installed) on 127.0.0.1:1883 with simulated devices publishing on it
(`tests.fakes.mqtt_devices`).

Start it, then start the dashboard with the printed settings (`make run` in another shell with them exported) and
use the sandbox credentials each fake module documents (also listed in the README).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from getpass import getuser
from pathlib import Path

FAKES = [
    ("SolarEdge V2", "tests.fakes.solaredge_v2", 8701, "DATACONN_SOLAREDGE_BASE_URL", "/v2"),
    ("SolarEdge V1", "tests.fakes.solaredge_v1", 8702, "DATACONN_SOLAREDGE_V1_BASE_URL", ""),
    ("Enphase", "tests.fakes.enphase", 8703, "DATACONN_ENPHASE_BASE_URL", "/api/v4"),
]
# The sandbox's Enphase application is on the Kilowatt plan, the smallest with the live stream, so every Enphase
# feature can be tried; the dashboard is told the same plan.
FAKE_OPTIONS = {"tests.fakes.enphase": ["--plan", "Kilowatt"]}


MQTT_PORT = 1883
# Debian installs the broker in an sbin directory, which a non-root PATH may lack.
_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def mqtt_processes(folder: Path) -> list[subprocess.Popen[bytes]]:
    """A Mosquitto broker on 127.0.0.1:1883 (unless one listens there already: it is used) and the simulated
    devices publishing on it; nothing, with how to install Mosquitto, when it is not installed."""
    processes: list[subprocess.Popen[bytes]] = []
    if not _listening(MQTT_PORT):
        binary = shutil.which("mosquitto", path=_SEARCH_PATH)
        if binary is None:
            print("No MQTT broker: for the MQTT sandbox, install Mosquitto (Debian/Ubuntu: apt-get install mosquitto).")
            return []
        config = folder / "mosquitto.conf"
        # `user`: run as whoever started the sandbox (as root, Mosquitto would switch to a `mosquitto` user).
        lines = [f"listener {MQTT_PORT} 127.0.0.1", "allow_anonymous true", "persistence false", f"user {getuser()}"]
        config.write_text("\n".join(lines) + "\n")
        processes.append(subprocess.Popen([binary, "-c", str(config)], stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 10
        while not _listening(MQTT_PORT):
            if processes[0].poll() is not None or time.monotonic() > deadline:
                print(f"Mosquitto did not start on 127.0.0.1:{MQTT_PORT}; the MQTT sandbox is off.")
                processes[0].kill()
                return []
            time.sleep(0.1)
    processes.append(subprocess.Popen([sys.executable, "-m", "tests.fakes.mqtt_devices", "--port", str(MQTT_PORT)]))
    print(f"MQTT broker on 127.0.0.1:{MQTT_PORT} (no user, no TLS) with simulated devices; add MQTT sources with:")
    print("  Topic tele/sandbox-fridge/SENSOR, Payload Path ENERGY.Power, Unit W    # Tasmota plug, every 10 s")
    print("  Topic shellyplus1pm-sandbox/status/switch:0, Payload Path apower, Unit W    # Shelly Plus 1PM, every 5 s")
    print("  Topic solar/114182912345/0/power, Payload Path (empty), Unit W    # OpenDTU inverter AC power, every 5 s")
    return processes


def main() -> int:
    processes: list[subprocess.Popen[bytes]] = [
        subprocess.Popen([sys.executable, "-m", module, "--port", str(port), *FAKE_OPTIONS.get(module, [])])
        for _, module, port, _, _ in FAKES
    ]
    folder = tempfile.TemporaryDirectory(prefix="dataconn-sandbox-")
    processes += mqtt_processes(Path(folder.name))
    print("Fake vendor servers on loopback. Start the dashboard with:")
    for name, _, port, variable, path in FAKES:
        print(f"  export {variable}=http://127.0.0.1:{port}{path}    # {name}")
    print("  export DATACONN_ENPHASE_AUTH_URL=http://127.0.0.1:8703/oauth")
    print("  export DATACONN_ENPHASE_PLAN=kilowatt    # the sandbox application's plan (it has the live stream)")
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
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:  # a server waiting out an open live stream (up to 300 s) to shut down
            process.kill()
            process.wait()
    folder.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
