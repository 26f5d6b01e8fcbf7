"""The catalog layer: sites, meters and sources as the pages and the config file edit them (drafts, validation,
saving, connection tests, the quota planner, the demo, vendor accounts and their authorisation)."""
