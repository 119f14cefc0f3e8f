"""A body of numbers only, for an array model, is decoded straight to one float matrix (app.convert.float_rows)
that the converter, the batcher and monitoring take as it is; anything else goes through strict validation.

The matrix must hold exactly the values pydantic would have validated, refuse every body that validation
would judge differently, and travel through batching and the inference log like the lists it replaces.
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest
from pydantic import StrictFloat, TypeAdapter

from jupyter_mlship.runtime import runtime_module
from support.notebooks import ok_cell

convert = runtime_module("convert")
monitoring = runtime_module("monitoring")
inference_log = runtime_module("inference_log")
VALIDATED = TypeAdapter(dict[str, list[list[StrictFloat]]])  # what the schema's strict validation reads


@pytest.mark.parametrize("body", [
    b'{"instances": [[0.1, -2, 3e-5], [1E3, 0, -0.0]]}',
    b'{"instances":[[1,2,3]]}',
    b'  {\n  "instances" :\n [ [ 0.30000000000000004 , 1e308, -1.5e-320 ] ]\n}\n ',
    b'{"instances": [[123456789012345678901, 0.1, 7]]}',
])
def test_numbers_only_bodies_become_the_matrix_validation_would_give(body):
    rows = convert.float_rows(body, 3)
    assert isinstance(rows, np.ndarray) and rows.dtype == np.float64
    expected = VALIDATED.validate_json(body)["instances"]
    assert rows.tolist() == expected  # the same float64 for every number, including rounding


@pytest.mark.parametrize("body", [
    b'{"instances": [[1, null, 3]]}',  # null: validation decides (NaN where nullable, 422 where not)
    b'{"instances": [[1, true, 3]]}',
    b'{"instances": [[1, "2", 3]]}',
    b'{"instances": [[1, NaN, 3]]}',
    b'{"instances": [[1, Infinity, 3]]}',
    b'{"instances": [[1, 2, 3]], "extra": 1}',
    b'{"other": [[1, 2, 3]]}',
    b'{"instances": [[1, 2, 3], [4, 5]]}',  # ragged
    b'{"instances": [[1, 2, 3, 4], [5, 6]]}',  # ragged, with as many values as two rows of 3
    b'{"instances": [[1, 2, 3], [[4], 5, 6]]}',  # a list where a number should be
    b'{"instances": [[1, 2]]}',  # another width
    b'{"instances": []}',
    b'{"instances": [1, 2, 3]}',
    b'{"instances": [[[1, 2, 3]]]}',
    b'{"instances": [[01, 2, 3]]}',  # not JSON
    b'{"instances": [[1, 2, 3]]}}',
    b'{"instances": [[1, 2, 3]]',
    b'{"instances": [[1e400, 2, 3]]}',  # beyond float64: validation reads it as inf
    b'[[1, 2, 3]]',
    b'',
    b'{"instances": [[1 2, 3]]}',  # the brackets and commas of a matrix, but not JSON
    b'{"instances": [[1, , 3]]}',
    b'{"instances": [[1, 2, 3],]}',
    b'{"instances": [[1, 2, 3], [4, 5, 6]}',
    b'{"instances": [[1, 2, 3]] , "instances": [[4, 5, 6]]}',  # a key twice: validation takes the last
])
def test_any_other_body_is_left_to_validation(body):
    assert convert.float_rows(body, 3) is None


def _without_simdjson(monkeypatch):
    monkeypatch.setitem(sys.modules, "simdjson", None)  # `import simdjson` raises ImportError


def _number_text(rng: np.random.Generator) -> str:
    """A JSON number as clients write them: ints of every size, decimals, exponents, subnormals, -0."""
    kind = rng.integers(9)
    if kind == 0:
        return str(int(rng.integers(-2**63, 2**63 - 1)))
    if kind == 1:
        return str(int(rng.integers(0, 2**63 - 1)) * 4 + int(rng.integers(4)))  # up to 2**65: beyond int64
    if kind == 2:
        return repr(float(rng.normal()))
    if kind == 3:
        return f"{rng.normal():.{rng.integers(1, 25)}e}"
    if kind == 4:
        return f"{float(rng.uniform(1, 10)):.17g}e{int(rng.integers(-330, 308))}"  # subnormal to near the largest double
    if kind == 5:
        return f"{rng.uniform(-1e6, 1e6):.{rng.integers(0, 30)}f}"
    if kind == 6:
        return "-0.0" if rng.integers(2) else "0"
    if kind == 7:
        return f"{rng.integers(1, 10)}E+{rng.integers(0, 20)}"
    return "9007199254740993"  # 2**53 + 1: halfway cases round to even


def test_simdjson_and_orjson_read_every_number_as_validation_does(monkeypatch):
    """The two parsers behind float_rows give the same float64 as pydantic for every number, whichever
    one is installed; where simdjson refuses a number (an integer beyond 64 bits) orjson reads it."""
    simdjson = pytest.importorskip("simdjson")  # a dependency of jupyter-mlship: present in CI
    rng = np.random.default_rng(11)
    refused = 0
    for _ in range(300):
        rows, width = int(rng.integers(1, 6)), int(rng.integers(1, 8))
        matrix = [[_number_text(rng) for _ in range(width)] for _ in range(rows)]
        body = ('{"instances": [' + ", ".join("[" + ",".join(row) + "]" for row in matrix) + "]}").encode()
        expected = VALIDATED.validate_json(body)["instances"]
        fast = convert.float_rows(body, width)
        assert fast is not None and fast.tolist() == expected, body
        assert np.signbit(fast).tolist() == np.signbit(expected).tolist(), body  # -0.0 stays -0.0
        refused += simdjson is not None and convert._simdjson_floats(body[14:-1], rows * width) is None
        with monkeypatch.context() as patch:
            _without_simdjson(patch)
            assert convert.float_rows(body, width).tolist() == expected, body
    assert 0 < refused < 300  # both parsers were exercised: simdjson for most bodies, orjson for some


def test_the_matrix_is_the_entry_functions_to_change(monkeypatch):
    """A notebook function may scale its input in place: the matrix is writable with either parser."""
    for patch in (lambda: None, lambda: _without_simdjson(monkeypatch)):
        patch()
        rows = convert.float_rows(b'{"instances": [[1, 2, 3], [4, 5, 6]]}', 3)
        rows *= 2
        assert rows.tolist() == [[2, 4, 6], [8, 10, 12]]


def test_requests_join_as_one_matrix_and_a_validated_part_joins_as_floats():
    matrix = np.array([[1.0, 2.0], [3.0, 4.0]])
    joined = convert.join_instances([matrix, [[5.0, None]], np.array([[6.0, 7.0]])])
    assert isinstance(joined, np.ndarray)
    np.testing.assert_array_equal(joined, [[1, 2], [3, 4], [5, np.nan], [6, 7]])
    assert convert.join_instances([[[1.0]], [[2.0]]]) == [[1.0], [2.0]]  # lists stay lists
    assert convert.join_instances([matrix]) is matrix


def test_the_log_writes_features_and_wide_instances_from_a_matrix(tmp_path):
    wide = {"kind": "ndarray", "width": 40, "dtype": "float64", "json_type": "number"}
    rows = np.arange(80, dtype=float).reshape(2, 40) / 3
    checked = monitoring.Checked(rows, monitoring.instance_features(rows, wide), {}, [])
    log = inference_log.InferenceLog(
        str(tmp_path), feature_columns={"l2_norm": "numeric", "mean": "numeric"}, hashed=set(), excluded=set(),
        category_key=monitoring.category_key, flush_s=3600, queue_rows=1000, rotate_rows=1000,
        rotate_bytes=2**30, rotate_s=3600)
    log.start()
    log.put_predictions("r1", "wide", "1", checked, [0, 1], 0.001)
    log.stop()
    table = pq.read_table(tmp_path / "predictions").to_pydict()
    assert [json.loads(text) for text in table["instance_json"]] == rows.tolist()
    assert table["feature.mean"] == pytest.approx(rows.mean(axis=1).tolist())


DECODED = """
import sys
from app.schema import decode_request
for body in sys.argv[1:]:
    print(type(decode_request(body.encode())).__name__)
"""


def test_an_array_service_decodes_numbers_to_a_matrix_and_answers_concurrent_requests_exactly(ipython, serve):
    ok_cell(ipython, "import numpy as np\nX = np.random.default_rng(0).normal(size=(40, 3))\n"
                     "W = np.array([0.5, -1.0, 2.0])")
    ok_cell(ipython, "%%ship lin --sample X[:5] --no-verify\ndef predict(x):\n    return x @ W")
    project = Path("services") / "lin"
    decoded = subprocess.run([sys.executable, "-c", DECODED, '{"instances": [[1, 2, 3]]}',
                              '{"instances": [[1, 2.5, "x"]]}'], cwd=project, capture_output=True, text=True,
                             timeout=120)
    # the number body is a matrix; the other raised pydantic's ValidationError, naming the field
    assert decoded.stdout.split() == ["ndarray"], decoded.stdout + decoded.stderr[-1500:]
    assert "ValidationError" in decoded.stderr and "instances.0.2" in decoded.stderr, decoded.stderr[-1500:]

    service = serve(project)
    X = ipython.user_ns["X"]
    W = ipython.user_ns["W"]
    bodies = [X[i:i + 1 + i % 7] for i in range(32)]  # 32 requests of 1 to 7 rows, batched together

    def ask(rows: np.ndarray) -> list:
        response = httpx.post(f"{service.url}/predict", json={"instances": rows.tolist()}, timeout=30)
        assert response.status_code == 200, response.text
        return response.json()["predictions"]

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(ask, bodies))
    for rows, answer in zip(bodies, answers):
        assert answer == (rows @ W).tolist()  # exact: the same float64 arithmetic as in the notebook
    refused = httpx.post(f"{service.url}/predict", json={"instances": [[1.0, True, 3.0]]}, timeout=30)
    assert refused.status_code == 422 and "instances[0][1]" in refused.text, refused.text


def test_a_body_of_brackets_is_refused_without_building_a_pattern_of_its_rows_times_the_width():
    """The matrix pattern is rows x width bytes: it is only built when the body is that long already."""
    import tracemalloc

    body = b'{"instances": ' + b"[" * 200_000 + b"]}"  # 200,000 "rows" of a 500-wide model: 100 MB
    tracemalloc.start()
    try:
        assert convert.float_rows(body, 500) is None
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5 * len(body), peak
    assert convert.float_rows(b'{"instances": [[1, 2], [3, 4]]}', 2).tolist() == [[1, 2], [3, 4]]
