"""Simulated MQTT devices for `make sandbox`: a Tasmota plug, a Shelly Gen2 switch and an OpenDTU inverter gateway,
publishing on a broker in the shapes docs/mqtt-devices.md documents (where each shape comes from is said there).

- Tasmota plug (a fridge): `tele/sandbox-fridge/SENSOR` every 10 s (Tasmota's `TelePeriod 10`), JSON with an
  `ENERGY` object: `ENERGY.Power` (W) and `ENERGY.Total` (kWh).
- Shelly Plus 1PM (a washing machine): `shellyplus1pm-sandbox/status/switch:0` every 5 s, the switch status:
  `apower` (W) and `aenergy.total` (Wh).
- OpenDTU (a Hoymiles micro-inverter, serial 114182912345): `solar/114182912345/0/power` (AC W),
  `solar/114182912345/0/yieldtotal` (kWh) and `solar/114182912345/1/power` (DC input 1, W) every 5 s, plain text.

Values follow the clock (a fridge compressor cycling, a washer's programme, PV over the local day), so any run shows
plausible curves. `--once` publishes each message once and exits (the tests use it).
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime

from paho.mqtt.client import Client, MQTTv311
from paho.mqtt.enums import CallbackAPIVersion

TASMOTA_TOPIC = "tele/sandbox-fridge/SENSOR"
SHELLY_TOPIC = "shellyplus1pm-sandbox/status/switch:0"
OPENDTU_SERIAL = "114182912345"
OPENDTU_AC_POWER = f"solar/{OPENDTU_SERIAL}/0/power"
OPENDTU_YIELD_TOTAL = f"solar/{OPENDTU_SERIAL}/0/yieldtotal"
OPENDTU_DC1_POWER = f"solar/{OPENDTU_SERIAL}/1/power"


def fridge_w(t: float) -> float:
    """A compressor: on 12 of every 40 minutes at about 85 W, 2 W standby."""
    return 85.0 + 3 * math.sin(t / 7) if (t % 2400) < 720 else 2.0


def washer_w(t: float) -> float:
    """A 90-minute programme every 3 hours: heating at 2 kW for 20 minutes, then drum motion around 250 W."""
    into = t % 10_800
    if into < 1_200:
        return 2_000.0 + 20 * math.sin(t)
    return 250.0 + 150 * math.sin(t / 30) if into < 5_400 else 0.8


def pv_w(t: float) -> float:
    """An 800 W micro-inverter over the local day (sunrise 6:00, sunset 18:00), 0 at night."""
    local = datetime.fromtimestamp(t)
    hour = local.hour + local.minute / 60 + local.second / 3600
    return round(max(0.0, math.sin(math.pi * (hour - 6) / 12)) * 780.0, 1)


class Energy:
    """A device's energy counter: the integral of its power since the simulator started, plus a start value."""

    def __init__(self, power: Callable[[float], float], start_wh: float) -> None:
        self.power, self.wh, self.last = power, start_wh, time.time()

    def now(self, t: float) -> float:
        self.wh += self.power(self.last) * (t - self.last) / 3600
        self.last = t
        return self.wh


def tasmota(t: float, energy: Energy) -> str:
    watts = round(fridge_w(t))
    total_kwh = energy.now(t) / 1000
    volts = 231
    return json.dumps(
        {
            "Time": datetime.fromtimestamp(t).strftime("%Y-%m-%dT%H:%M:%S"),  # local time, no offset, as Tasmota
            "ENERGY": {
                "TotalStartTime": "2025-03-20T15:20:48",
                "Total": round(total_kwh, 3),
                "Yesterday": 1.495,
                "Today": round(total_kwh % 1.5, 3),
                "Period": 0,
                "Power": watts,
                "ApparentPower": round(watts * 1.6),
                "ReactivePower": round(watts * 1.25),
                "Factor": 0.61,
                "Voltage": volts,
                "Current": round(watts * 1.6 / volts, 3),
            },
        }
    )


def shelly(t: float, energy: Energy) -> str:
    watts = round(washer_w(t), 1)
    return json.dumps(
        {
            "id": 0,
            "source": "timer",
            "output": True,
            "apower": watts,
            "voltage": 229.8,
            "current": round(watts / 229.8, 3),
            "aenergy": {"total": round(energy.now(t), 3), "by_minute": [0.0, 0.0, 0.0], "minute_ts": int(t)},
            "temperature": {"tC": 41.2, "tF": 106.2},
        }
    )


def publish_all(client: Client, once: bool, stop: threading.Event) -> None:
    fridge, washer, inverter = Energy(fridge_w, 514_153.0), Energy(washer_w, 46_791.262), Energy(pv_w, 1_234_567.0)
    next_at = {"tasmota": 0.0, "shelly": 0.0, "opendtu": 0.0}
    while not stop.is_set():
        t = time.time()
        if t >= next_at["tasmota"]:
            client.publish(TASMOTA_TOPIC, tasmota(t, fridge), qos=1)
            next_at["tasmota"] = t + 10
        if t >= next_at["shelly"]:
            client.publish(SHELLY_TOPIC, shelly(t, washer), qos=1)
            next_at["shelly"] = t + 5
        if t >= next_at["opendtu"]:
            ac = pv_w(t)
            client.publish(OPENDTU_AC_POWER, f"{ac:.1f}", qos=1)
            client.publish(OPENDTU_YIELD_TOTAL, f"{inverter.now(t) / 1000:.3f}", qos=1)
            client.publish(OPENDTU_DC1_POWER, f"{ac * 1.04:.1f}", qos=1)  # DC is a little above AC (losses)
            next_at["opendtu"] = t + 5
        if once:
            return
        stop.wait(max(0.0, min(next_at.values()) - time.time()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.mqtt_devices", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--once", action="store_true", help="publish each device's message once, then exit")
    args = parser.parse_args(argv)
    client = Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="dataconn-sandbox-devices",
                    protocol=MQTTv311)  # fmt: skip
    try:
        client.connect(args.host, args.port)
    except OSError as exc:
        print(f"mqtt_devices: cannot reach the broker at {args.host}:{args.port} ({exc})", file=sys.stderr)
        return 1
    client.loop_start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        publish_all(client, args.once, stop)
    finally:
        time.sleep(0.5 if args.once else 0)  # QoS 1: let the last messages reach the broker
        client.disconnect()
        client.loop_stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
