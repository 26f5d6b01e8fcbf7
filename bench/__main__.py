"""Run every benchmark in this folder and print its figures."""

from __future__ import annotations

from bench import bench_catalog

if __name__ == "__main__":
    bench_catalog.main()
