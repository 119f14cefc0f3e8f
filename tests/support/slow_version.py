"""A stand-in model version for router tests: waits DELAY_S, then answers what UPSTREAM (a real service)
answers for the same body (asked once per distinct body, so it adds no load on UPSTREAM). It remembers
every X-Request-ID it saw, so a test can prove a shadow got every request."""

from __future__ import annotations

import asyncio
import os

import httpx
from fastapi import FastAPI, Request, Response

DELAY_S = float(os.environ.get("DELAY_S", "0.2"))
UPSTREAM = os.environ["UPSTREAM"]
app = FastAPI()
seen: list[str] = []
answers: dict[bytes, tuple[bytes, int]] = {}
client = httpx.AsyncClient(timeout=30)  # one pool: a client per request would cost more CPU than the test


@app.post("/predict")
async def predict(request: Request) -> Response:
    seen.append(request.headers.get("x-request-id", ""))
    body = await request.body()
    await asyncio.sleep(DELAY_S)
    if body not in answers:
        answer = await client.post(f"{UPSTREAM}/predict", content=body, headers={"content-type": "application/json"})
        answers[body] = answer.content, answer.status_code
    content, status = answers[body]
    return Response(content, status, media_type="application/json")


@app.get("/seen")
def seen_ids() -> list[str]:
    return seen


@app.get("/healthz")
@app.get("/readyz")
def healthz() -> dict:
    return {"status": "ready"}
