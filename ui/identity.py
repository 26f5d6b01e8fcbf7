"""Who this dashboard session acts as (docs/access.md): the signed-in user, or, with sign-in not configured, the
local user of a dashboard that serves 127.0.0.1 only."""

from __future__ import annotations

from core.actors import LOCAL_USER, SIGNED_OUT, Actor
from core.config import Settings, sign_in_configured


def session_actor(settings: Settings | None) -> Actor:
    """The actor of this page run. Without settings (they failed to load: the page says why) nobody may write."""
    if settings is None:
        return SIGNED_OUT
    if not sign_in_configured(settings):
        return LOCAL_USER
    return SIGNED_OUT  # sign-in through the identity provider: not wired yet, so nothing may be written
