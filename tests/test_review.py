"""REVIEW.md says what was exported literally: generated names and values never turn into Markdown."""

from __future__ import annotations

from pathlib import Path

from markdown_it import MarkdownIt

from support.notebooks import ok_cell


def test_review_markdown_escapes_generated_text(ipython):
    ok_cell(ipython, """
        import pandas as pd
        from sklearn.linear_model import LogisticRegression
        X_test = pd.DataFrame({"petal__width_": [0.1, 0.2, 0.3, 0.4], "kind": ["a*b", "c_d", "a*b", "c_d"]})
        X_test["kind"] = X_test["kind"].astype("category")
        clf = LogisticRegression().fit(X_test[["petal__width_"]], [0, 1, 0, 1])
    """)
    ok_cell(ipython, """
        %%ship lit --sample X_test --no-verify
        def score(frame):
            return clf.predict(frame[["petal__width_"]])
    """)
    markdown = Path("services/lit/REVIEW.md").read_text()
    html = MarkdownIt("commonmark").enable("table").render(markdown)

    assert "<em>" not in html and "<strong>" not in html  # nvidia-*-cu* and a*b, c_d stay as written
    assert "nvidia-*-cu*" in html  # the CPU base image's reason names the libraries it looked for
    assert "a*b, c_d" in html  # category values of the request schema
    assert "<code>petal__width_</code>" in html  # a column name as code, underscores intact
    # Every table kept its columns: an escaped | never splits a cell.
    assert "<th>field</th><th>dtype</th><th>JSON type</th><th>null allowed</th><th>notes</th>" in html.replace("\n", "")
