"""What the panel lists from a live kernel: models, notebook functions and samples, without side effects."""

from __future__ import annotations

import ast
import json
import queue
import textwrap

import pytest
from jupyter_client.manager import start_new_kernel

from jupyter_mlship.inspect import candidates, list_candidates

# The expression the panel sends (docs/panel-protocol.md).
PANEL_EXPRESSION = '__import__("jupyter_mlship.inspect", fromlist=["_"]).candidates()'

NOTEBOOK = textwrap.dedent('''
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    X = pd.DataFrame({"age": [30.0, 40.0, 50.0, 60.0], "income": [1.0, 2.0, 3.0, 4.0]})
    y = [0, 1, 0, 1]
    clf = LogisticRegression().fit(X, y)
    grid = np.zeros((3, 2))
    vector = np.zeros(3)
    texts = ["it's great", "bad"]
    rows = [{"age": 1}, {"age": 2}]
    mixed = [1, "a"]
    _hidden = clf

    def add_features(frame, scale=2.0):
        """Adds derived columns."""
        return frame * scale
''')


def names(items: list[dict]) -> list[str]:
    return [item["name"] for item in items]


@pytest.fixture(scope="module")
def kernel():
    manager, client = start_new_kernel(kernel_name="python3")
    try:
        yield client
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def execute(client, code: str, **kwargs) -> tuple[dict, list[dict]]:
    """Run code; return the execute_reply content and the IOPub messages it caused."""
    msg_id = client.execute(code, **kwargs)
    reply = client.get_shell_msg(timeout=60)
    while reply["parent_header"].get("msg_id") != msg_id:
        reply = client.get_shell_msg(timeout=60)
    messages = []
    while True:
        try:
            msg = client.get_iopub_msg(timeout=10)
        except queue.Empty:
            break
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break
        messages.append(msg)
    return reply["content"], messages


def namespace_snapshot(client) -> dict:
    # id() of every value: a changed binding shows even when the name stays.
    reply, _ = execute(client, "", silent=True, store_history=False, user_expressions={
        "ns": "{k: id(v) for k, v in get_ipython().user_ns.items()}",
        "count": "get_ipython().execution_count",
    })
    data = reply["user_expressions"]
    return {"ns": ast.literal_eval(data["ns"]["data"]["text/plain"]), "count": data["count"]["data"]["text/plain"]}


def test_the_panel_lists_what_a_real_kernel_holds_and_leaves_it_unchanged(kernel):
    reply, _ = execute(kernel, NOTEBOOK)
    assert reply["status"] == "ok", reply
    before = namespace_snapshot(kernel)

    reply, messages = execute(kernel, "", silent=False, store_history=False,
                              user_expressions={"candidates": PANEL_EXPRESSION})

    result = reply["user_expressions"]["candidates"]
    assert result["status"] == "ok", result
    # The kernel's display formatter sends the listing as an application/json bundle: JSON as it is.
    candidates = result["data"]["application/json"]
    assert names(candidates["models"]) == ["clf"]
    assert candidates["models"][0]["type"] == "LogisticRegression"
    assert candidates["models"][0]["methods"][:2] == ["predict", "predict_proba"]
    assert "decision_function" in candidates["models"][0]["methods"]
    assert candidates["functions"] == [{"name": "add_features", "signature": "(frame, scale=2.0)",
                                        "doc": "Adds derived columns."}]
    samples = {s["name"]: s for s in candidates["samples"]}
    assert sorted(samples) == ["X", "grid", "rows", "texts"]  # not the 1-D vector, not the mixed list
    assert samples["X"]["type"] == "DataFrame" and samples["X"]["shape"] == [4, 2]
    assert samples["X"]["nbytes"] >= 4 * 2 * 8
    assert samples["grid"] == {"name": "grid", "type": "ndarray", "shape": [3, 2], "nbytes": 48, "detail": "float64"}
    assert samples["texts"]["type"] == "list[str]" and samples["rows"]["type"] == "list[dict]"

    assert not messages or all(m["msg_type"] in ("status", "execute_input") for m in messages)  # printed nothing
    assert namespace_snapshot(kernel) == before


def test_listing_imports_no_framework_the_user_did_not_import(kernel):
    reply, _ = execute(kernel, "", store_history=False, user_expressions={
        "candidates": PANEL_EXPRESSION,
        "heavy": "sorted(m for m in ('torch', 'xgboost', 'lightgbm', 'tensorflow') if m in __import__('sys').modules)",
    })
    assert reply["user_expressions"]["heavy"]["data"]["text/plain"] == "[]"


def test_models_are_instances_with_predict_not_classes_or_modules(ipython):
    ipython.run_cell(textwrap.dedent('''
        from sklearn.linear_model import LogisticRegression
        import sklearn

        class Scorer:
            def predict(self, x):
                return x

        class Broken:
            @property
            def predict(self):
                raise RuntimeError("lazy model not loaded")

        scorer = Scorer()
        broken = Broken()
    '''))
    found = list_candidates(ipython.user_ns)
    assert [m.name for m in found.models] == ["scorer"]
    assert found.models[0].methods == ["predict"]
    assert [f.name for f in found.functions] == []  # methods of notebook classes are not entry functions


def test_torch_modules_are_models_only_when_torch_is_loaded(ipython, monkeypatch):
    import sys
    import types

    class Module:  # stands in for torch.nn.Module: the listing must never import torch itself
        def forward(self, x):
            return x

    class Net(Module):
        pass

    fake_nn = types.ModuleType("torch.nn")
    fake_nn.Module = Module
    ipython.user_ns["net"] = Net()
    assert list_candidates(ipython.user_ns).models == []
    monkeypatch.setitem(sys.modules, "torch", types.ModuleType("torch"))
    monkeypatch.setitem(sys.modules, "torch.nn", fake_nn)
    models = list_candidates(ipython.user_ns).models
    assert [(m.name, m.type, m.methods) for m in models] == [("net", "Net", ["forward"])]


def test_names_of_ipython_and_private_names_are_skipped(ipython):
    ipython.run_cell("_private = [[1, 2]]\nimport numpy as np\n_arr = np.zeros((2, 2))")
    found = list_candidates(ipython.user_ns)
    assert all(not s.name.startswith("_") for s in found.samples)
    assert {"In", "Out", "exit", "quit", "get_ipython"}.isdisjoint(f.name for f in found.functions)


def test_candidates_survive_quotes_and_unicode(ipython):
    ipython.run_cell('def f(sep="\'", label="é"):\n    """Splits on \'."""\n    return sep\n')
    # What a kernel sends for a user expression: its display formatter's bundle, then JSON on the wire.
    bundle, _ = ipython.display_formatter.format(candidates())
    wire = json.loads(json.dumps(bundle))
    function = wire["application/json"]["functions"][0]
    assert function["signature"] == "(sep=\"'\", label='é')"
    assert function["doc"] == "Splits on '."
    assert wire["text/plain"] == "<0 models, 1 functions, 0 samples>"
