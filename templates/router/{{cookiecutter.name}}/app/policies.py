"""Which version answers a request: the live table (routes.yaml + the followed alias) and the three policies.

- split: weights per version; with a sticky key, the key's hash picks the version, so one user always
  sees one version (and a weight change moves only the users in the shifted slice);
- shadow: the primary answers, the shadows get a copy in the background;
- bandit: Thompson sampling over Beta(1 + rewards, 1 + misses) posteriors, with an additive exploration
  floor: P(arm) = floor + (1 - arms * floor) * P_thompson(arm), so no arm ever starves.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

from app.config import PRIMARY, BanditPolicy, Routes, ShadowPolicy, SplitPolicy


@dataclass(frozen=True)
class Table:
    """The routing table in force: routes.yaml with `primary` replaced by the followed version."""

    kind: str
    weights: dict[str, float] = field(default_factory=dict)  # split: version -> share, adding up to 1
    primary: str | None = None  # shadow
    shadows: tuple[str, ...] = ()
    arms: tuple[str, ...] = ()  # bandit
    floor: float = 0.0

    def versions(self) -> list[str]:
        """Every version that may answer a caller, most-used first (the failover order)."""
        if self.kind == "split":
            return sorted(self.weights, key=lambda v: -self.weights[v])
        if self.kind == "shadow":
            return [self.primary] if self.primary else []
        return list(self.arms)


def build_table(routes: Routes, followed: str | None) -> Table:
    """Resolve `primary` to the followed version; ValueError if it is needed but unknown."""
    policy = routes.policy

    def resolve(version: str) -> str:
        if version == PRIMARY and routes.follow is not None:
            if followed is None:
                raise ValueError(f"the alias {routes.follow.alias!r} of {routes.follow.name!r} has no version yet")
            if followed not in routes.backends:
                raise ValueError(
                    f"the alias {routes.follow.alias!r} points at version {followed!r}, which has no URL in backends"
                )
            return followed
        return version

    if isinstance(policy, SplitPolicy):
        raw = policy.weights or {PRIMARY: 1.0}
        weights: dict[str, float] = {}
        for version, weight in raw.items():
            resolved = resolve(version)
            weights[resolved] = weights.get(resolved, 0.0) + weight
        total = sum(weights.values())
        return Table(kind="split", weights={v: w / total for v, w in weights.items() if w > 0})
    if isinstance(policy, ShadowPolicy):
        primary = resolve(policy.primary or PRIMARY)
        return Table(kind="shadow", primary=primary, shadows=tuple(s for s in policy.shadows if s != primary))
    assert isinstance(policy, BanditPolicy)
    return Table(kind="bandit", arms=tuple(policy.arms), floor=policy.floor)


def key_point(key: str, salt: str) -> float:
    """A stable point in [0, 1) for a sticky key: the same key lands on the same point in every replica."""
    digest = hashlib.sha256(f"{salt}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def pick_split(weights: dict[str, float], point: float) -> str:
    """The version whose slice of [0, 1) holds `point`; slices follow the order of routes.yaml."""
    cumulative = 0.0
    for version, share in weights.items():
        cumulative += share
        if point < cumulative:
            return version
    return next(reversed(weights))  # rounding: the last slice ends at 1


def pick_bandit(posteriors: dict[str, tuple[float, float]], floor: float, rng: random.Random) -> str:
    """Thompson sampling with an additive floor (GrowthBook's fix for clip-and-renormalize bias)."""
    arms = list(posteriors)
    if rng.random() < floor * len(arms):
        return rng.choice(arms)
    return max(arms, key=lambda arm: rng.betavariate(*posteriors[arm]))


def probability_best(posteriors: dict[str, tuple[float, float]], rng: random.Random,
                     draws: int = 2000) -> dict[str, float]:
    """P(arm has the highest mean reward), estimated by sampling the posteriors."""
    wins = dict.fromkeys(posteriors, 0)
    for _ in range(draws):
        wins[max(posteriors, key=lambda arm: rng.betavariate(*posteriors[arm]))] += 1
    return {arm: count / draws for arm, count in wins.items()}
