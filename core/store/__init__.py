"""The store layer: the one DuckDB file (schema, migrations, file format), what is kept in it (readings and their
rollups, encrypted secrets and tokens, quota counts, cached answers) and what stands in for it while it is held or
damaged (the spool, quarantine). Imports the shared leaf modules and `core.providers` only."""
