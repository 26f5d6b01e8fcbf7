"""Run every benchmark in this folder and print its figures."""

from __future__ import annotations

import subprocess
import sys

from bench import bench_catalog, bench_config_import, bench_cycle, bench_ingest, bench_pages

if __name__ == "__main__":
    bench_catalog.main()
    bench_config_import.main()
    bench_ingest.main()
    bench_cycle.main()
    bench_pages.main()
    # The soak measures the collector's resident memory: in a process of its own, so the others' peaks and imports
    # do not count.
    subprocess.run([sys.executable, "-m", "bench.bench_soak"], check=True)
