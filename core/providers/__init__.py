"""Monitoring-API providers behind one interface (see `base`)."""
