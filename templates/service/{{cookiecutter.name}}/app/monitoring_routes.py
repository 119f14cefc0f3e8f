"""Routes and request hooks of data monitoring (see app/monitoring.py): /feedback, /monitoring, the guard."""

from __future__ import annotations

import math
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator

from app.monitoring import MONITOR

router = APIRouter(tags=["monitoring"])


class Feedback(BaseModel):
    """The real outcome for an earlier prediction, joined with it by request_id."""

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(min_length=1, max_length=200, description="X-Request-ID of the prediction")
    outcome: JsonValue = Field(description="What really happened: a label, a number, true/false...")

    @field_validator("outcome")
    @classmethod
    def finite(cls, outcome: JsonValue) -> JsonValue:
        """NaN, Infinity and 1e400 (which JSON parsers read as infinite) are not outcomes anyone observed."""
        values = [outcome]
        while values:
            value = values.pop()
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError("an outcome holds no NaN or infinite number")
            values += value.values() if isinstance(value, dict) else value if isinstance(value, list) else []
        return outcome


class FeedbackAccepted(BaseModel):
    accepted: int


@router.post("/feedback", response_model=FeedbackAccepted,
             responses={503: {"description": "The log queue is full; nothing was recorded, retry later"}})
def feedback(body: Feedback | Annotated[list[Feedback], Field(min_length=1)]) -> dict:
    # An empty list is refused by validation itself: the same 422 shape as every other invalid body.
    items = body if isinstance(body, list) else [body]
    dropped = MONITOR.feedback([(item.request_id, item.outcome) for item in items])
    if dropped:
        raise HTTPException(503, f"the inference log queue is full: {dropped} outcomes were not recorded; retry later")
    return {"accepted": len(items)}


@router.get("/monitoring")
def monitoring() -> Any:
    """Drift of the recent window against the training data, skew-guard counts, log status."""
    return MONITOR.report()
