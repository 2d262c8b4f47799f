"""Client-side balancing over replicas of one OpenAI-compatible server (several vLLM engines, several nodes).

Each request goes to the replica with the fewest requests in flight among those not marked down (ties go
round-robin). A replica that fails (connection refused or dropped, timeout, 408/409/429, 5xx) is marked down
for a cool-off that doubles with each failure in a row (1 s, 2 s, ... 30 s) and the request moves at once to
another replica; only when every replica is down does the caller back off. After its cool-off a replica gets
one request again; a success clears its record. All of it runs on the backend's one event loop, so no locks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

BASE_COOLDOWN = 1.0
MAX_COOLDOWN = 30.0


def split_base_urls(base_url: str | list[str] | tuple[str, ...] | None) -> list[str | None]:
    """"URL1,URL2" or ["URL1", "URL2,URL3"] → ["URL1", "URL2", "URL3"]; None → [None] (the client's default)."""
    if base_url is None:
        return [None]
    items = [base_url] if isinstance(base_url, str) else list(base_url)
    urls = [part.strip() for item in items for part in item.split(",") if part.strip()]
    return list(dict.fromkeys(urls)) or [None]


@dataclass
class Replica:
    base_url: str | None
    client: Any                       # openai.AsyncOpenAI bound to base_url
    in_flight: int = 0
    served: int = 0                   # requests answered
    failed: int = 0                   # failures seen (in total)
    failures_in_a_row: int = 0
    down_until: float = 0.0           # time.monotonic() before which it gets no new request

    def is_up(self, now: float) -> bool:
        return now >= self.down_until

    @property
    def where(self) -> str:
        return self.base_url or "the OpenAI API"


@dataclass
class ReplicaPool:
    replicas: list[Replica]
    clock: Callable[[], float] = time.monotonic
    _turn: int = field(default=0, repr=False)

    @classmethod
    def build(cls, base_urls: list[str | None], make_client: Callable[[str | None], Any]) -> ReplicaPool:
        return cls([Replica(url, make_client(url)) for url in base_urls])

    def __len__(self) -> int:
        return len(self.replicas)

    def pick(self, avoid: set[int] = frozenset()) -> Replica:
        """The replica for the next try: up, not in `avoid` (indices already tried by this request), fewest in
        flight; when none qualifies, the one that comes back soonest."""
        now = self.clock()
        n = len(self.replicas)
        order = [self.replicas[(self._turn + i) % n] for i in range(n)]   # rotating start: ties go round-robin
        self._turn = (self._turn + 1) % n
        up = [r for r in order if r.is_up(now) and self.replicas.index(r) not in avoid]
        if up:
            return min(up, key=lambda r: r.in_flight)
        return min(order, key=lambda r: r.down_until)

    def index(self, replica: Replica) -> int:
        return self.replicas.index(replica)

    def has_other_up(self, avoid: set[int]) -> bool:
        now = self.clock()
        return any(r.is_up(now) for i, r in enumerate(self.replicas) if i not in avoid)

    def succeeded(self, replica: Replica) -> None:
        replica.served += 1
        replica.failures_in_a_row = 0
        replica.down_until = 0.0

    def failed(self, replica: Replica) -> None:
        replica.failed += 1
        replica.failures_in_a_row += 1
        cooldown = min(BASE_COOLDOWN * 2 ** (replica.failures_in_a_row - 1), MAX_COOLDOWN)
        replica.down_until = self.clock() + cooldown

    def stats(self) -> list[dict[str, Any]]:
        return [{"base_url": r.base_url, "served": r.served, "failed": r.failed} for r in self.replicas]
