"""Fake vendor servers that behave like SolarEdge V2, SolarEdge V1 and Enphase v4 (see each module)."""
