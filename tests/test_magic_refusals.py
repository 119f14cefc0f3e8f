"""A user's mistakes and dangerous notebook state: each stops the export with one clear sentence.

Real IPython shell, real magics; `--no-verify` where the refusal happens before verification.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from IPython.core.error import UsageError

from support.notebooks import ok_cell, run_cell

MODEL_CELL = """
import numpy as np
from sklearn.linear_model import LogisticRegression
X = np.random.default_rng(0).normal(size=(40, 3))
y = (X[:, 0] > 0).astype(int)
clf = LogisticRegression().fit(X, y)
"""


def refused(shell, source: str) -> str:
    result = run_cell(shell, source)
    error = result.error_in_exec
    assert isinstance(error, UsageError), f"expected a UsageError, got {error!r}"
    return str(error)


def assert_nothing_written(out: Path = Path("services")) -> None:
    assert not out.exists() or not any(out.iterdir()), list(out.iterdir())


@pytest.mark.parametrize(
    ("setup", "variable", "reason"),
    [
        ("handle = open('notes.txt', 'w')", "handle", "open file handle"),
        ("import threading\nguard = threading.Lock()", "guard", "lock"),
        ("import sqlite3\nhandle = sqlite3.connect(':memory:')", "handle", "database connection"),
        ("import socket\nhandle = socket.socket()", "handle", "socket"),
        ("handle = (i for i in range(3))", "handle", "generator"),
        ("import threading\nhandle = threading.Thread(target=print)", "handle", "thread"),
    ],
)
def test_reachable_resources_are_refused_with_variable_cell_and_reason(ipython, setup, variable, reason):
    ok_cell(ipython, MODEL_CELL)
    ok_cell(ipython, setup)
    cell = ipython.execution_count - 1
    message = refused(ipython, f"""
        %%ship svc --sample X[:5] --no-verify
        def predict(x):
            _ = {variable}
            return clf.predict(x)
    """)
    assert f"`{variable}`" in message and f"In[{cell}]" in message and reason in message
    assert_nothing_written()


def test_object_that_cannot_be_saved_is_refused(ipython):
    ok_cell(ipython, MODEL_CELL)
    ok_cell(ipython, "import threading\nclass Holder:\n    def __init__(self):\n        self.lock = threading.Lock()\nholder = Holder()")
    message = refused(ipython, """
        %%ship svc --sample X[:5] --no-verify
        def predict(x):
            return clf.predict(x) + (0 if holder else 1)
    """)
    assert "`holder`" in message and "cannot be saved" in message and "lock" in message


def test_lambda_inside_a_model_is_refused_with_advice(ipython):
    ok_cell(ipython, MODEL_CELL)
    ok_cell(ipython, "from sklearn.preprocessing import FunctionTransformer\nft = FunctionTransformer(lambda a: a * 2)\nft.fit(X)")
    message = refused(ipython, """
        %%ship svc --sample X[:5] --no-verify
        def predict(x):
            return clf.predict(ft.transform(x))
    """)
    assert "`ft`" in message and "lambda" in message and "def" in message


def test_entry_that_raises_on_the_sample(ipython):
    ok_cell(ipython, MODEL_CELL)
    message = refused(ipython, """
        %%ship svc --sample X[:5] --no-verify
        def predict(x):
            return clf.predict(x[:, :2])
    """)
    assert "`predict`" in message and "raised ValueError on the sample" in message
    assert_nothing_written()


def test_unsupported_sample_type(ipython):
    ok_cell(ipython, MODEL_CELL)
    message = refused(ipython, """
        %%ship svc --sample "set([1, 2, 3])" --no-verify
        def predict(x):
            return list(x)
    """)
    assert "set" in message and "supported" in message


@pytest.mark.parametrize("name", ["Bad Name", "9lives", "UPPER", "a/b"])
def test_bad_name(ipython, name):
    ok_cell(ipython, MODEL_CELL)
    message = refused(ipython, f"%ship '{name}' --model clf --sample X[:5] --no-verify")
    assert "invalid NAME" in message


def test_magic_argument_mistakes_are_usage_errors(ipython):
    ok_cell(ipython, MODEL_CELL)
    assert "--model" in refused(ipython, "%ship svc --sample X[:5]")
    assert "no method `transform_all`" in refused(ipython, "%ship svc --model clf --sample X[:5] --method transform_all")
    assert "is not defined" in refused(ipython, "%ship svc --model nope --sample X[:5]")
    assert "could not be evaluated" in refused(ipython, "%ship svc --model clf --sample X_missing[:5]")
    assert "several functions" in refused(ipython, "%%ship svc --sample X[:5]\ndef a(x):\n    return x\ndef b(x):\n    return x")
    assert "defines no function" in refused(ipython, "%%ship svc --sample X[:5]\nz = 1")
    assert "not valid Python" in refused(ipython, "%%ship svc --sample X[:5]\ndef (:")
    assert "quote an expression" in refused(ipython, "%ship svc --model clf --sample X[:5] + 1")


def test_help_is_real(ipython):
    from jupyter_mlship.magics import ShipMagics

    doc = ShipMagics.ship.__doc__
    assert "--sample EXPR" in doc and "--dry-run" in doc and "--model VAR" in doc


def test_redefined_function_held_by_a_model_is_refused(ipython):
    ok_cell(ipython, """
        from sklearn.feature_extraction.text import TfidfVectorizer
        def clean(s):
            return s.lower()
        vec = TfidfVectorizer(preprocessor=clean).fit(["alpha beta", "beta gamma"])
    """)
    ok_cell(ipython, "def clean(s):\n    return s.upper()")
    message = refused(ipython, """
        %%ship svc --sample "['alpha beta']" --no-verify
        def predict(texts):
            return vec.transform(texts).sum(axis=1).A1
    """)
    assert "older definition of `clean`" in message


def test_dry_run_shows_the_review_and_writes_nothing(ipython, capsys):
    ok_cell(ipython, MODEL_CELL)
    ok_cell(ipython, "PASSWORD_UNUSED = 'hunter2hunter2'\nSCALE = 2.0")
    ok_cell(ipython, """
        %%ship svc --sample X[:5] --dry-run
        def predict(x):
            return clf.predict_proba(x * SCALE)
    """)
    out = capsys.readouterr().out
    assert "Review: svc" in out and "`SCALE`" in out and "`clf`" in out and "PASSWORD_UNUSED" not in out
    assert "scikit-learn" in out
    assert_nothing_written()


def test_secret_in_used_code_blocks_and_override_lists_it(ipython, capsys):
    ok_cell(ipython, MODEL_CELL)
    ok_cell(ipython, "AWS_KEY = 'AKIAIOSFODNN7EXAMPLA'")
    message = refused(ipython, """
        %%ship svc --sample X[:5] --dry-run
        def predict(x):
            assert AWS_KEY
            return clf.predict(x)
    """)
    assert "possible secret" in message and "--allow-secrets" in message
    ok_cell(ipython, """
        %%ship svc --sample X[:5] --dry-run --allow-secrets
        def predict(x):
            assert AWS_KEY
            return clf.predict(x)
    """)
    out = capsys.readouterr().out
    assert "## Secrets found" in out and "AWS" in out.split("## Secrets found")[1]


def test_a_token_hidden_inside_a_model_object_blocks_the_export(ipython):
    ok_cell(ipython, MODEL_CELL)
    ok_cell(ipython, "clf.deploy_notes_ = {'registry_token': 'ghp_0123456789abcdefghijklmnopqrstuvwxyzAB'}")
    message = refused(ipython, "%ship svc --model clf --sample X[:5] --dry-run")
    assert "possible secret (GitHub Token) inside the object `clf`" in message
    del ipython.user_ns["clf"].deploy_notes_
    ok_cell(ipython, "%ship svc --model clf --sample X[:5] --dry-run")  # an ordinary model passes


@pytest.mark.parametrize(
    ("cell", "words"),
    [
        # The sample's kind is checked before the entry function runs on it, so the sample is named.
        ("%%ship svc --sample (row for row in X[:2]) --no-verify\ndef predict(x):\n    return clf.predict(x)",
         ["the sample is a", "generator", "supported samples are"]),
        ("%%ship svc --sample {'a': 1.0} --no-verify\ndef predict(x):\n    return clf.predict(x)",
         ["the sample is a", "dict", "supported samples are"]),
        ("%ship svc --model clf --sample X[:2] --no-verify --version ''", ["invalid --version ''"]),
        ("%ship svc --model clf --sample X[:2] --no-verify --version 'a b'", ["invalid --version 'a b'"]),
        ("%%ship svc --sample X[:2] --entry clf --no-verify\ndef predict(x):\n    return clf.predict(x)",
         ["`clf` is a LogisticRegression, not a function", "--model clf"]),
    ],
)
def test_bad_samples_versions_and_entries_are_refused_naming_the_option(ipython, cell, words):
    ok_cell(ipython, MODEL_CELL)
    message = refused(ipython, cell)
    for word in words:
        assert word in message, message
    assert_nothing_written()
