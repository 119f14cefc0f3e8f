"""Router state that must outlive one request: bandit sums and request id -> version (for /feedback).

In this process by default (one router replica, one worker). With `state: {redis: URL}` it lives in
Redis/Valkey so every replica samples the same posteriors and any replica can take a request's feedback:
rewards are added with HINCRBYFLOAT inside MULTI/EXEC, so two replicas never lose an update.
"""

from __future__ import annotations

from collections import OrderedDict

PRIOR = (1.0, 1.0)  # Beta(1, 1): no opinion before the first reward


class MemoryState:
    def __init__(self, capacity: int = 200_000) -> None:
        self.sums: dict[str, list[float]] = {}
        self.requests: OrderedDict[str, str] = OrderedDict()
        self.capacity = capacity
        self.description = "in process"

    async def posteriors(self, arms: list[str] | tuple[str, ...]) -> dict[str, tuple[float, float]]:
        result = {}
        for arm in arms:
            rewards, misses = self.sums.get(arm, (0.0, 0.0))
            result[arm] = (PRIOR[0] + rewards, PRIOR[1] + misses)
        return result

    async def add_reward(self, arm: str, reward: float) -> None:
        sums = self.sums.setdefault(arm, [0.0, 0.0])
        sums[0] += reward
        sums[1] += 1.0 - reward

    async def remember(self, request_id: str, version: str) -> None:
        self.requests[request_id] = version
        self.requests.move_to_end(request_id)
        while len(self.requests) > self.capacity:  # bounded: the oldest requests can no longer get feedback
            self.requests.popitem(last=False)

    async def take(self, request_id: str) -> str | None:
        """The version that answered, forgotten at once so a request is rewarded only once."""
        return self.requests.pop(request_id, None)

    async def close(self) -> None:
        pass


class RedisState:
    def __init__(self, url: str, prefix: str, request_ttl_s: int) -> None:
        import redis.asyncio as redis  # only needed when configured

        self.redis = redis.from_url(url, decode_responses=True)
        self.bandit_key = f"{prefix}:bandit"
        self.request_prefix = f"{prefix}:request:"
        self.ttl = request_ttl_s
        self.description = f"redis ({url.split('@')[-1]})"  # no password in /routes

    async def posteriors(self, arms: list[str] | tuple[str, ...]) -> dict[str, tuple[float, float]]:
        sums = await self.redis.hgetall(self.bandit_key)
        return {
            arm: (PRIOR[0] + float(sums.get(f"{arm}:rewards", 0)), PRIOR[1] + float(sums.get(f"{arm}:misses", 0)))
            for arm in arms
        }

    async def add_reward(self, arm: str, reward: float) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hincrbyfloat(self.bandit_key, f"{arm}:rewards", reward)
            pipe.hincrbyfloat(self.bandit_key, f"{arm}:misses", 1.0 - reward)
            await pipe.execute()

    async def remember(self, request_id: str, version: str) -> None:
        await self.redis.set(self.request_prefix + request_id, version, ex=self.ttl)

    async def take(self, request_id: str) -> str | None:
        return await self.redis.getdel(self.request_prefix + request_id)

    async def close(self) -> None:
        await self.redis.aclose()
