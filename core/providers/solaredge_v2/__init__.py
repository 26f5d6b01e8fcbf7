"""SolarEdge Monitoring API V2: the client and the parsing of its answers."""
