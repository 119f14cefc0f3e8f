"""Routes and request hooks of data monitoring (see app/monitoring.py): /feedback, /monitoring, the guard."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field, JsonValue

from app.monitoring import MONITOR, Checked

router = APIRouter(tags=["monitoring"])


def guard(instances: list) -> Checked:
    """Before a prediction: count values outside the training data; 422 when the guard is set to reject."""
    checked = MONITOR.check(instances)
    if MONITOR.rejects(checked):
        shown = checked.violations[:5]
        more = f" (and {len(checked.violations) - 5} more)" if len(checked.violations) > 5 else ""
        raise HTTPException(422, "; ".join(shown) + more)
    return checked


class Feedback(BaseModel):
    """The real outcome for an earlier prediction, joined with it by request_id."""

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(min_length=1, max_length=200, description="X-Request-ID of the prediction")
    outcome: JsonValue = Field(description="What really happened: a label, a number, true/false...")


class FeedbackAccepted(BaseModel):
    accepted: int


@router.post("/feedback", response_model=FeedbackAccepted,
             responses={503: {"description": "The log queue is full; nothing was recorded, retry later"}})
def feedback(body: Feedback | list[Feedback]) -> dict:
    items = body if isinstance(body, list) else [body]
    if not items:
        raise HTTPException(422, "body: an empty list; send one feedback object or a list of them")
    dropped = MONITOR.feedback([(item.request_id, item.outcome) for item in items])
    if dropped:
        raise HTTPException(503, f"the inference log queue is full: {dropped} outcomes were not recorded; retry later")
    return {"accepted": len(items)}


@router.get("/monitoring")
def monitoring() -> Any:
    """Drift of the recent window against the training data, skew-guard counts, log status."""
    return MONITOR.report()
