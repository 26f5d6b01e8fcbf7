"""Push (HTTP): readings a logger or a webhook sends to the ingest service (docs/real-time.md)."""
