"""What must hold after a run, as pure functions: the state digest, stock conservation per item, and the twin
agreeing with the world (DESIGN.md, "World and twin are two things")."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from pydantic import BaseModel

Counts = dict[str, int]  # shelf_id (the item on that shelf) -> units


def state_digest(tables: Mapping[str, Iterable[BaseModel]]) -> str:
    """sha256 over every table's rows as canonical JSON, rows sorted, tables by name: equal states, equal
    digests, whatever order the rows were written in."""
    digest = hashlib.sha256()
    for name in sorted(tables):
        digest.update(f"#{name}\n".encode())
        for line in sorted(row.model_dump_json() for row in tables[name]):
            digest.update(line.encode() + b"\n")
    return digest.hexdigest()


@dataclass
class StockLedger:
    """Where every unit of each item is, per shelf_id. Conservation: initial + received = the sum of the rest."""

    initial: Counts
    received: Counts = field(default_factory=dict)
    on_shelf: Counts = field(default_factory=dict)
    in_warehouse: Counts = field(default_factory=dict)
    in_transit: Counts = field(default_factory=dict)
    in_carts: Counts = field(default_factory=dict)
    sold: Counts = field(default_factory=dict)
    removed: Counts = field(default_factory=dict)
    unpaid: Counts = field(default_factory=dict)  # left the store without being paid for (thefts)

    def problems(self) -> list[str]:
        places = {"shelf": self.on_shelf, "warehouse": self.in_warehouse, "in transit": self.in_transit,
                  "carts": self.in_carts, "sold": self.sold, "removed": self.removed,
                  "left unpaid": self.unpaid}
        items = set(self.initial) | set(self.received) | {k for counts in places.values() for k in counts}
        found = []
        for item in sorted(items):
            had = self.initial.get(item, 0) + self.received.get(item, 0)
            where = {place: counts.get(item, 0) for place, counts in places.items()}
            if had != sum(where.values()) or any(v < 0 for v in where.values()):
                parts = " + ".join(f"{place} {units}" for place, units in where.items() if units)
                found.append(f"{item}: initial+received {had} != {parts or 0}")
        return found


def differences(name: str, twin: Mapping[str, object], world: Mapping[str, object], limit: int = 5) -> list[str]:
    """Keys where the twin and the world disagree (the first `limit`, and how many in all)."""
    keys = sorted(k for k in set(twin) | set(world) if twin.get(k) != world.get(k))
    found = [f"{name} {k}: twin {twin.get(k)!r}, world {world.get(k)!r}" for k in keys[:limit]]
    if len(keys) > limit:
        found.append(f"{name}: {len(keys) - limit} more keys differ")
    return found
