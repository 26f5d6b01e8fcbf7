"""Token stores for tests: the app's real one keeps the tokens encrypted in DuckDB (`core.store`)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from core.providers.enphase.oauth import Tokens


@dataclass
class InMemoryTokenStore:
    """A `TokenStore` (core.providers.enphase.oauth) in memory; `saved` keeps every saved pair, oldest first."""

    tokens: Tokens | None = None
    saved: list[Tokens] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def load(self) -> Tokens | None:
        return self.tokens

    def save(self, tokens: Tokens) -> None:
        self.tokens = tokens
        self.saved.append(tokens)
