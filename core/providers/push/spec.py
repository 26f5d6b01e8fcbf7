"""Push (HTTP) as the rest of the program sees it (`core.providers.spec`): no vendor, no client, no budget; the
sender brings the readings to the ingest service (`jobs.ingest`), authenticated by the source's token or signature
(`core.store.push_tokens`)."""

from __future__ import annotations

from core.models import Provider
from core.providers.spec import ProviderSpec

# A signed source's HMAC key, kept encrypted in `source_secrets` (core.store.push_tokens); never typed.
SIGNING_SECRET = "push_signing_secret"

SPEC = ProviderSpec(
    provider=Provider.PUSH,
    label="Push (HTTP)",
    build_client=None,
    delivery="push",
    obtained_secrets=(SIGNING_SECRET,),
    setup_note=(
        "A logger or webhook sends this source's readings to the ingest service: save it to get the endpoint and"
        " its token (shown once)."
    ),
)
