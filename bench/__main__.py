"""Run every benchmark in this folder and print its figures.

`python -m bench` runs them all (the fleet benchmark in its full mode, about 20 minutes, and the MQTT one, about 13);
`python -m bench fleet [--quick]` runs only the fleet benchmark (bench/bench_fleet.py; `--quick`: about 9 minutes),
`python -m bench mqtt [--quick]` only the MQTT benchmark (bench/bench_mqtt.py; `--quick`: about 3.5 minutes).
"""

from __future__ import annotations

import subprocess
import sys

from bench import (
    bench_catalog,
    bench_config_import,
    bench_cycle,
    bench_ingest,
    bench_pages,
    bench_push,
    bench_write,
)

if __name__ == "__main__":
    if sys.argv[1:2] == ["fleet"]:
        from bench import bench_fleet

        bench_fleet.main(sys.argv[2:])
        sys.exit(0)
    if sys.argv[1:2] == ["mqtt"]:
        from bench import bench_mqtt

        bench_mqtt.main(sys.argv[2:])
        sys.exit(0)
    bench_catalog.main()
    bench_config_import.main()
    bench_ingest.main()
    bench_cycle.main()
    bench_write.main()
    bench_pages.main()
    bench_push.main()
    # The soak measures the collector's resident memory: in a process of its own, so the others' peaks and imports
    # do not count.
    subprocess.run([sys.executable, "-m", "bench.bench_soak"], check=True)
    # The fleet runs the real collector process against the fake vendors, in processes of their own.
    subprocess.run([sys.executable, "-m", "bench.bench_fleet"], check=True)
    # The MQTT benchmark runs the real collector against a real Mosquitto broker and a publisher process; it
    # measures the collector's memory from outside.
    subprocess.run([sys.executable, "-m", "bench.bench_mqtt"], check=True)
