"""The analytics layer: what the pages read (live power, history, KPIs, alerts, API health, coverage, exports),
computed from the store's readings and rollups. Never imports the collection layer."""
