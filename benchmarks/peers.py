"""The peer servers of the benchmark: their source files and how to install and start each one.

Every peer serves the same pickled HistGradientBoostingClassifier (model.pkl) and answers
``{"instances": [[20 floats], ...]}`` with ``{"predictions": [...]}``, so one request body and one
correctness check fit all of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

HANDWRITTEN = '''
import pickle
import numpy as np
from fastapi import FastAPI
from pydantic import BaseModel

with open("model.pkl", "rb") as fh:
    model = pickle.load(fh)
app = FastAPI()


class Request(BaseModel):
    instances: list[list[float]]


@app.post("/predict")
def predict(request: Request) -> dict:
    return {"predictions": model.predict(np.array(request.instances)).tolist()}
'''

FLOOR = '''
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

BODY = b'{"predictions":[0]}'


async def predict(request):
    await request.body()
    return Response(BODY, media_type="application/json")

app = Starlette(routes=[Route("/predict", predict, methods=["POST"])])
'''

BENTO = '''
import os
import pickle
import bentoml
import numpy as np

BATCHABLE = os.environ.get("BENTO_BATCHABLE") == "1"


@bentoml.service(workers=1)
class Model:
    def __init__(self) -> None:
        with open("model.pkl", "rb") as fh:
            self.model = pickle.load(fh)

    @bentoml.api(batchable=BATCHABLE, route="/predict")
    def predict(self, instances: np.ndarray) -> np.ndarray:
        return self.model.predict(instances)
'''

MLFLOW_SAVE = '''
import pickle, mlflow.sklearn
with open("model.pkl", "rb") as fh:
    model = pickle.load(fh)
mlflow.sklearn.save_model(model, "mlflow_model", serialization_format="cloudpickle")
'''


@dataclass
class Peer:
    name: str  # the row label
    env: str  # the venv it runs in (shared by peers with the same packages)
    packages: list[str]
    files: dict[str, str]
    command: list[str]  # run in the peer's folder, with {python} and {port} filled in
    environ: dict[str, str] = field(default_factory=dict)
    prepare: str | None = None  # a script run once with the venv's python before starting
    check: bool = True  # False for the floor, which answers a constant
    path: str = "/predict"  # where it takes prediction requests


def peers(sklearn: str, numpy: str) -> list[Peer]:
    model_pins = [f"scikit-learn=={sklearn}", f"numpy=={numpy}"]
    uvicorn = ["{python}", "-m", "uvicorn", "app:app", "--host", "127.0.0.1", "--port", "{port}", "--no-access-log"]
    bento = ["{python}", "-m", "bentoml", "serve", "service:Model", "--host", "127.0.0.1", "--port", "{port}"]
    return [
        Peer("hand-written FastAPI + pydantic, uvicorn[standard]", "fastapi",
             ["fastapi", "uvicorn[standard]", *model_pins], {"app.py": HANDWRITTEN}, uvicorn),
        Peer("HTTP floor (Starlette, constant JSON, uvloop)", "fastapi",
             ["fastapi", "uvicorn[standard]", *model_pins], {"app.py": FLOOR}, uvicorn, check=False),
        Peer("BentoML 1.4", "bentoml", ["bentoml>=1.4,<1.5", *model_pins], {"service.py": BENTO}, bento,
             {"BENTO_BATCHABLE": "0"}),
        Peer("BentoML 1.4, adaptive batching", "bentoml", ["bentoml>=1.4,<1.5", *model_pins],
             {"service.py": BENTO}, bento, {"BENTO_BATCHABLE": "1"}),
        Peer("MLflow models serve", "mlflow", ["mlflow-skinny", "pandas", "flask", "gunicorn", "fastapi", "uvicorn", *model_pins],
             {"save.py": MLFLOW_SAVE},
             ["{python}", "-m", "mlflow", "models", "serve", "-m", "mlflow_model", "-h", "127.0.0.1", "-p", "{port}",
              "--env-manager", "local", "-w", "1"],
             prepare="save.py", path="/invocations"),  # MLflow's scoring address: {"instances": ...} in
    ]
