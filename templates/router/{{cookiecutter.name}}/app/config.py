"""routes.yaml: the router's one configuration file, read and checked here.

    name: churn                     # the model; /v1/models/churn:predict
    backends: {"1": http://127.0.0.1:8001, "2": http://127.0.0.1:8002}   # version -> service URL
    policy: {kind: split, weights: {"1": 90, "2": 10}, sticky: {header: X-User-ID}}
    timeout_s: 5                    # per backend request; a slower backend is a 504 (or a failover)
    failover: false                 # true: a down/slow backend's request goes to the next version
    follow: {registry: file:///srv/registry, name: churn, alias: production}   # optional
    state: {redis: redis://127.0.0.1:6379/0}                                    # optional

See README.md for every key. A version may be named `primary` in split weights (and left out as the
shadow policy's primary) when `follow` is set: it then means the version the registry alias points at.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

PRIMARY = "primary"  # in weights: the followed alias's current version


class ConfigError(ValueError):
    """routes.yaml cannot be used; the message names the file, the key and the reason."""


def _as_text(value: Any) -> Any:
    # YAML reads `1: http://...` with an integer key; versions are names, so compare them as text.
    if isinstance(value, dict):
        return {str(k): v for k, v in value.items()}
    if isinstance(value, list):
        return [str(v) if isinstance(v, (int, float)) else v for v in value]
    return str(value) if isinstance(value, (int, float)) else value


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Sticky(Strict):
    """Where the sticky key comes from: a request header, or a field of the first instance."""

    header: str | None = None
    field: str | None = None

    @model_validator(mode="after")
    def one_source(self) -> Sticky:
        if (self.header is None) == (self.field is None):
            raise ValueError("give exactly one of header or field")
        return self


class SplitPolicy(Strict):
    kind: Literal["split"]
    # strict: true/false are not weights; finite: an infinite weight would turn the split into NaN shares
    weights: dict[str, Annotated[float, Field(ge=0, strict=True, allow_inf_nan=False)]] = Field(default_factory=dict)
    sticky: Sticky | None = None
    salt: str = ""  # change it to reshuffle which users see which version

    _text_keys = field_validator("weights", mode="before")(_as_text)


class ShadowPolicy(Strict):
    kind: Literal["shadow"]
    primary: str | None = None
    shadows: list[str] = Field(min_length=1)
    max_in_flight: int = Field(100, ge=1)  # more shadow calls than this at once are dropped (and counted)

    _text = field_validator("primary", "shadows", mode="before")(_as_text)

    @model_validator(mode="after")
    def distinct(self) -> ShadowPolicy:
        if len(set(self.shadows)) != len(self.shadows):
            raise ValueError("shadows: name each version once")
        if self.primary is not None and self.primary in self.shadows:
            raise ValueError(f"version {self.primary} is the primary: it cannot also be its own shadow")
        return self


class BanditPolicy(Strict):
    kind: Literal["bandit"]
    arms: list[str] = Field(min_length=2)
    floor: float = Field(0.05, ge=0, le=0.5)  # each arm's share is at least this much

    _text = field_validator("arms", mode="before")(_as_text)

    @model_validator(mode="after")
    def floor_fits(self) -> BanditPolicy:
        if len(set(self.arms)) != len(self.arms):
            raise ValueError("arms: name each version once")
        if self.floor * len(self.arms) > 1:
            raise ValueError(f"floor {self.floor} times {len(self.arms)} arms is more than all the traffic")
        return self


class Follow(Strict):
    registry: str
    name: str
    alias: str
    poll_s: float = Field(1.0, gt=0)


class State(Strict):
    redis: str | None = None  # bandit posteriors and request ids shared by every router replica
    key_prefix: str | None = None
    request_ttl_s: int = Field(7 * 24 * 3600, gt=0)  # how long feedback can still find its request


class Routes(Strict):
    name: str
    backends: dict[str, str] = Field(min_length=1)
    policy: Annotated[SplitPolicy | ShadowPolicy | BanditPolicy, Field(discriminator="kind")]
    timeout_s: float = Field(5.0, gt=0)
    connect_timeout_s: float = Field(1.0, gt=0)
    shadow_timeout_s: float = Field(10.0, gt=0)
    failover: bool = False
    follow: Follow | None = None
    state: State = Field(default_factory=State)

    _text_keys = field_validator("backends", mode="before")(_as_text)

    @field_validator("backends")
    @classmethod
    def backend_urls(cls, backends: dict[str, str]) -> dict[str, str]:
        for version, url in backends.items():
            if not url.startswith(("http://", "https://")) or len(url.split("://", 1)[1]) == 0:
                raise ValueError(f"backends.{version}: {url!r} is not an http:// or https:// URL")
        return backends

    @model_validator(mode="after")
    def versions_have_backends(self) -> Routes:
        policy = self.policy
        if isinstance(policy, SplitPolicy):
            named = list(policy.weights)
            if not policy.weights and self.follow is None:
                raise ValueError("policy.weights: name at least one version (or set follow)")
            if policy.weights and sum(policy.weights.values()) <= 0:
                raise ValueError("policy.weights: the weights add up to 0")
        elif isinstance(policy, ShadowPolicy):
            if policy.primary is None and self.follow is None:
                raise ValueError("policy.primary: name the primary version (or set follow)")
            named = [*([policy.primary] if policy.primary else []), *policy.shadows]
        else:
            if self.follow is not None:
                raise ValueError("follow: a bandit chooses among its arms itself; follow works with split or shadow")
            named = policy.arms
        for version in named:
            if version == PRIMARY and self.follow is not None:
                continue
            if version not in self.backends:
                raise ValueError(f"version {version!r} has no URL in backends")
        return self


def parse_routes(text: str, source: str = "routes.yaml") -> Routes:
    """The checked configuration, or a ConfigError naming the source, the key and the cause."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of keys (name, backends, policy, ...)")
    try:
        return Routes.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "top level"
        raise ConfigError(f"{source}: {where}: {first['msg']}") from None


def load_routes(path: Path) -> Routes:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    return parse_routes(text, str(path))
