"""Enphase Monitoring API v4: the client, the parsing of its answers and its OAuth 2.0 authorisation."""
