"""Cheap real projects for registry tests, and a real S3 (moto in server mode) on 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from .notebooks import free_port, ok_cell

TRAIN = """
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    X = np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 1.0], [3.0, 0.0], [0.5, 2.0], [2.5, 2.0]])
    y = np.array([0, 0, 1, 1, 0, 1])
    clf = LogisticRegression(C={c}).fit(X, y)
"""


def export_projects(folder: Path, name: str = "churn", notebook: str | None = None) -> tuple[Path, Path]:
    """Two real `%ship --no-verify` exports of a tiny sklearn model (different C): (first, second) copies."""
    import shutil

    from IPython.core.interactiveshell import InteractiveShell

    cwd = os.getcwd()
    os.chdir(folder)
    saved_notebook = os.environ.get("MLSHIP_NOTEBOOK")
    os.environ["MLSHIP_NOTEBOOK"] = notebook or str(folder / "churn.ipynb")
    shell = InteractiveShell.instance()
    shell.reset(new_session=True)
    try:
        shell.run_cell("%load_ext jupyter_mlship", store_history=True)
        copies = []
        for i, c in enumerate(("1.0", "0.1")):
            ok_cell(shell, TRAIN.format(c=c))
            ok_cell(shell, f"%ship {name} --model clf --sample X[:3] --method predict_proba --no-verify --out out{i}")
            copy = folder / f"project{i + 1}"
            shutil.copytree(folder / f"out{i}" / name, copy, ignore=shutil.ignore_patterns(".git"))
            copies.append(copy)
        return copies[0], copies[1]
    finally:
        shell.reset(new_session=True)
        os.chdir(cwd)
        if saved_notebook is None:
            os.environ.pop("MLSHIP_NOTEBOOK", None)
        else:
            os.environ["MLSHIP_NOTEBOOK"] = saved_notebook


@contextlib.contextmanager
def moto_s3(bucket: str = "models") -> Iterator[dict]:
    """A moto S3 server on a free loopback port with one bucket; yields the s3fs storage options."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
                                             "FSSPEC_S3_ENDPOINT_URL")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1",
                      FSSPEC_S3_ENDPOINT_URL=endpoint)  # the env form reaches `mlship` subprocesses
    try:
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
        yield {"endpoint_url": endpoint, "endpoint": endpoint, "bucket": bucket}
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def copy_project(source: Path, folder: Path) -> Path:
    """A fresh copy (a push stamps the folder's ship.json and REVIEW.md)."""
    import shutil

    target = folder / f"{source.name}-{len(list(folder.glob(source.name + '-*')))}"
    shutil.copytree(source, target)
    return target


def race(calls, rounds: int = 30):
    """Run the calls at the same moment (threads behind a barrier), round after round, until two collide.

    Returns [(round results: value or exception per call)]; fails loudly when no round ever collided.
    """
    import threading

    seen = []
    for _ in range(rounds):
        barrier = threading.Barrier(len(calls))
        results: list = [None] * len(calls)

        def run(i, barrier=barrier, results=results):
            barrier.wait()
            try:
                results[i] = calls[i]()
            except Exception as exc:  # noqa: BLE001 - the refusal is the result under test
                results[i] = exc

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
            assert not t.is_alive(), "a racing call did not finish within 60 s"
        seen.append(results)
        if any(isinstance(r, Exception) for r in results):
            return seen
    raise AssertionError(f"{rounds} rounds of {len(calls)} simultaneous calls never collided; the race was not exercised")
