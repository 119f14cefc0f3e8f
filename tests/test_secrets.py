"""Credentials in exported code or constants are found; ordinary feature code is not flagged."""

from __future__ import annotations

import textwrap

from jupyter_mlship.capture.secrets import scan_for_secrets

GITHUB_TOKEN = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"  # 36 characters after the prefix
PRIVATE_KEY = "\n".join([
    "-----BEGIN RSA PRIVATE KEY-----",
    "MIIEowIBAAKCAQEAvKx8dGmkoz0dX4mLQJ3pT0u0XbzYVh1W1r0m2d8lqXq4nq9o",
    "-----END RSA PRIVATE KEY-----",
])

FEATURES = textwrap.dedent('''\
    import numpy as np
    import pandas as pd
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    COLUMNS = ["income", "age", "tenure_months", "plan_type", "monthly_charges", "contract_type"]
    THRESHOLD = 0.5


    def add_features(df: pd.DataFrame) -> pd.DataFrame:
        df = df.copy()
        df["income_k"] = df["income"] / 1000
        df["charges_per_month"] = df["total_charges"] / np.maximum(df["tenure_months"], 1)
        df["is_long_contract"] = df["contract_type"].isin(["one_year", "two_year"]).astype(int)
        return df[COLUMNS + ["income_k", "charges_per_month", "is_long_contract"]]


    def predict(x):
        return model.predict_proba(add_features(x))[:, 1] > THRESHOLD
''')


def test_ordinary_feature_code_is_not_flagged():
    assert scan_for_secrets({"app/features.py": FEATURES}) == []
    assert scan_for_secrets({"constant COLUMNS": repr(["income", "age", "tenure_months"]),
                             "constant THRESHOLD": "0.5"}) == []


def test_aws_key_assigned_to_a_variable():
    source = FEATURES + '\nAWS_ACCESS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"\n'
    findings = scan_for_secrets({"app/features.py": source})
    assert [(f.file, f.line, f.type) for f in findings] == [
        ("app/features.py", source.count("\n"), "AWS Access Key")]


def test_password_keyword_assignment():
    findings = scan_for_secrets({"app/features.py": 'import os\n\npassword = "hunter2xyz!Q"\n'})
    assert [(f.line, f.type) for f in findings] == [(3, "Secret Keyword")]


def test_github_token_is_reported_once():
    findings = scan_for_secrets({"app/features.py": f'token = "{GITHUB_TOKEN}"\n'})
    assert len(GITHUB_TOKEN) == 40
    assert [(f.line, f.type) for f in findings] == [(1, "GitHub Token")]


def test_private_key_block():
    source = f'KEY = """{PRIVATE_KEY}"""\n\n\ndef sign(x):\n    return x\n'
    findings = scan_for_secrets({"app/features.py": source})
    assert [(f.line, f.type) for f in findings] == [(1, "Private Key")]


def test_constants_and_several_files_keep_their_display_names():
    findings = scan_for_secrets({
        "app/features.py": FEATURES,
        "constant API_KEY": repr("AKIAIOSFODNN7EXAMPLE"),
        "constant DEPLOY_KEY": PRIVATE_KEY,
        "constant GH": repr(GITHUB_TOKEN),
    })
    assert [(f.file, f.line, f.type) for f in findings] == [
        ("constant API_KEY", 1, "AWS Access Key"),
        ("constant DEPLOY_KEY", 1, "Private Key"),
        ("constant GH", 1, "GitHub Token"),
    ]


def test_several_secrets_in_one_file_are_each_reported():
    source = (
        'import os\n'
        'AWS = "AKIAIOSFODNN7EXAMPLE"\n'
        'password = "hunter2xyz!Q"\n'
        f'gh = "{GITHUB_TOKEN}"\n'
    )
    findings = scan_for_secrets({"notebook.py": source})
    assert [(f.line, f.type) for f in findings] == [
        (2, "AWS Access Key"), (3, "Secret Keyword"), (4, "GitHub Token")]
    assert all(f.file == "notebook.py" for f in findings)


def test_scanning_leaves_detect_secrets_global_settings_as_they_were():
    from detect_secrets.settings import get_settings

    before = get_settings().json()
    scan_for_secrets({"a.py": 'password = "hunter2xyz!Q"\n'})
    assert get_settings().json() == before
