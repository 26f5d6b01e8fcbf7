"""MQTT devices: meters, plugs and inverter gateways that publish their readings on a broker (docs/real-time.md,
docs/mqtt-devices.md).

- `payload.py`: a message's payload to a number (a plain number, or a dotted path into JSON) and its unit.
- `topics.py`: topic filters (`+` and `#` wildcards), checked and matched with the MQTT client's own rules.
- `subscriber.py`: one connection per broker, subscribed to the topics of every source on it, reconnecting with
  capped exponential backoff; hands out samples and keeps a connection state for API Health.
- `status.py`: that state (connected, connecting, refused and why; message rate, payload errors).
- `aggregate.py`: samples of many sources into 1-minute averages with coverage (`core.minute_average`), as rows
  ready for ingest.

The protocol itself is Eclipse Paho's (`paho-mqtt`), the reference MQTT client maintained by the Eclipse
Foundation: session, keep-alive, acknowledgements and TLS are its job, not ours.
"""
