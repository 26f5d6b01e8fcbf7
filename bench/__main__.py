"""Run every benchmark in this folder and print its figures."""

from __future__ import annotations

from bench import bench_catalog, bench_ingest

if __name__ == "__main__":
    bench_catalog.main()
    bench_ingest.main()
