"""SolarEdge Monitoring API V1 (retired by SolarEdge on 2026-11-03): the client and the parsing of its answers."""
