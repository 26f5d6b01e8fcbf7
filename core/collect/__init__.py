"""The collection layer: the collector's pass (what to poll, polling, writing the results, each source's health,
gaps and backfills) and imported readings files."""
