"""The inference log on object storage: S3 served by moto on 127.0.0.1, read back by `mlship monitor`."""

from __future__ import annotations

import io

import httpx
import pyarrow.parquet as pq
import pytest

from support.monitoring import QUIET, export_demo, instances
from support.notebooks import free_port, mlship


@pytest.fixture
def s3(monkeypatch):
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    yield env
    server.stop()


def test_the_log_goes_to_s3_and_mlship_monitor_reads_it_back(s3, tmp_path, serve):
    import s3fs

    fs = s3fs.S3FileSystem()
    fs.mkdir("mlship-logs")
    project = export_demo(tmp_path / "services")
    service = serve(project, env={**QUIET, **s3, "MLSHIP_LOG_DIR": "s3://mlship-logs/demo", "MLSHIP_LOG_FLUSH_S": "0.5"})
    ids = []
    for i, row in enumerate(instances(60, seed=8)):
        response = httpx.post(f"{service.url}/predict", json={"instances": [row]}, headers={"X-Request-ID": f"s3-{i}"})
        assert response.status_code == 200
        ids.append(f"s3-{i}")
    feedback = [{"request_id": rid, "outcome": 1} for rid in ids[:40]]
    assert httpx.post(f"{service.url}/feedback", json=feedback).json() == {"accepted": 40}
    service.stop()  # SIGTERM: the last objects are put before the process exits

    objects = fs.find("mlship-logs/demo")
    assert objects and all(key.endswith(".parquet") for key in objects), objects  # no temporary objects
    for key in objects:  # each object is a whole Parquet file
        pq.read_table(io.BytesIO(fs.cat_file(key)))
    assert not (project / "logs").exists()  # nothing went to the local default

    result = mlship("monitor", "s3://mlship-logs/demo", "--project", str(project), timeout=300)
    assert result.returncode == 0, result.stderr
    print(result.stdout)
    assert "60 predictions, 40 outcomes, 40 joined" in result.stdout
