"""Expressions as users type them on the `%ship` line: brackets and strings keep them whole."""

from __future__ import annotations

import json

import pytest

from jupyter_mlship.magic_args import split_magic_line
from support.notebooks import ok_cell


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("lookup --sample rows[:2, :1]", ["lookup", "--sample", "rows[:2, :1]"]),
        ("svc --sample df[['a', 'b']]", ["svc", "--sample", "df[['a', 'b']]"]),
        ("svc --sample df.sample(5, random_state=0)", ["svc", "--sample", "df.sample(5, random_state=0)"]),
        ("svc --sample X[:5] --reference X_train[:, :3]", ["svc", "--sample", "X[:5]", "--reference", "X_train[:, :3]"]),
        ("svc --sample [{'text': 'a b'}]", ["svc", "--sample", "[{'text': 'a b'}]"]),
        # quotes stay accepted, and stay in the word (the magic unquotes a word that is one literal)
        ("svc --sample \"df[['a', 'b']]\" --out 'my services'",
         ["svc", "--sample", "\"df[['a', 'b']]\"", "--out", "'my services'"]),
        ("svc --out ~/services/2024-06 --version 1.0-rc1", ["svc", "--out", "~/services/2024-06", "--version", "1.0-rc1"]),
        ("  svc   --sample   X[:2]  ", ["svc", "--sample", "X[:2]"]),
        ("svc --sample=X[1, 2]", ["svc", "--sample=X[1, 2]"]),
        # what Python cannot tokenize falls back to IPython's whitespace splitting
        ("svc --sample f( --out x", ["svc", "--sample", "f(", "--out", "x"]),
        ("svc --out it's", ["svc", "--out", "it's"]),
        ("", []),
    ],
)
def test_split_keeps_expressions_whole(line, words):
    assert split_magic_line(line) == words


MODEL_CELL = """
import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
X = np.random.default_rng(0).normal(size=(40, 3))
y = (X[:, 0] > 0).astype(int)
clf = LogisticRegression().fit(X[:, :2], y)
df = pd.DataFrame(X, columns=["a", "b", "c"])
"""


def test_unquoted_array_slices_in_sample_and_reference(ipython, capsys):
    ok_cell(ipython, MODEL_CELL)
    ok_cell(ipython, "%ship svc --model clf --sample X[:4, :2] --reference X[:, :2] --dry-run")
    assert "golden sample of 4 instances" in capsys.readouterr().out


def test_unquoted_frame_expressions_in_the_cell_form(ipython, capsys):
    ok_cell(ipython, MODEL_CELL)
    ok_cell(ipython, """
        %%ship lookup --sample df[['a', 'b']].sample(3, random_state=0) --dry-run
        def predict(frame):
            return clf.predict(frame[["a", "b"]].to_numpy())
    """)
    review = capsys.readouterr().out
    assert "golden sample of 3 instances" in review
    assert "`a`" in review and "`b`" in review and "`c`" not in review


def test_quotes_still_accepted_and_nothing_is_dollar_or_brace_expanded(ipython, tmp_path):
    ok_cell(ipython, "n = 3")
    ok_cell(ipython, f"""
        %%ship echo --sample ["$n {{n}}", 'a b'] --out "{tmp_path / 'out dir'}" --no-verify
        def predict(texts):
            return [len(t) for t in texts]
    """)
    ship = json.loads((tmp_path / "out dir" / "echo" / "ship.json").read_text())
    assert ship["golden"]["instances"] == ["$n {n}", "a b"]
