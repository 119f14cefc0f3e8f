"""Pins come from the real installed distributions of this interpreter."""

from __future__ import annotations

import importlib.metadata
import os
import time

import pytest

from jupyter_mlship.capture.environment import (
    PipIndexSettings,
    _parse_config_list,
    capture_requirements,
    distributions_for_modules,
    normalize,
    pip_index_settings,
    python_version,
    service_modules,
    test_requirements,
)
from jupyter_mlship.capture import environment
from jupyter_mlship.spec import InputSchema


def by_name(requirements):
    return {normalize(r.name): r for r in requirements}


def test_python_version_is_the_running_interpreter():
    import sys

    assert python_version() == "{}.{}.{}".format(*sys.version_info[:3])


def test_sklearn_pins_scikit_learn_and_its_installed_requirements():
    pytest.importorskip("sklearn")
    pins = by_name(capture_requirements(["sklearn"]))
    for name in ("scikit-learn", "numpy", "scipy", "joblib", "threadpoolctl"):
        assert name in pins, name
        assert pins[name].version == importlib.metadata.version(name)
    assert pins["scikit-learn"].because == ["sklearn"]
    assert "scikit-learn" in pins["numpy"].because
    assert "ipython" not in pins and "matplotlib" not in pins
    assert not any(name.startswith("jupyter") for name in pins)
    assert all(r.line == f"{r.name}=={r.version}" for r in pins.values())


def test_sorted_without_duplicates_and_metadata_names():
    requirements = capture_requirements(["sklearn", "numpy", "scipy", "yaml", "pandas"])
    names = [normalize(r.name) for r in requirements]
    assert names == sorted(names) and len(names) == len(set(names))
    yaml = by_name(requirements).get("pyyaml")
    if yaml is not None:
        assert yaml.name == importlib.metadata.metadata("pyyaml")["Name"]  # written as the dist spells it
        assert yaml.because == ["yaml"]


def test_torch_keeps_its_local_version_tag():
    try:
        version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("torch is not installed")
    pins = by_name(capture_requirements(["torch"]))
    assert pins["torch"].version == version
    if "+" in version:
        assert pins["torch"].line == f"torch=={version}"  # e.g. torch==2.13.0+cpu, found only via find-links


def test_stdlib_and_unknown_modules_are_skipped():
    assert distributions_for_modules(["os", "json", "collections", "no_such_module_mlship", "features"]) == {}
    assert capture_requirements(["os", "sys", "no_such_module_mlship"]) == []


def test_distributions_for_modules_maps_back_to_modules():
    found = distributions_for_modules(["sklearn.pipeline", "numpy", "os"])
    assert found["scikit-learn"] == ["sklearn"]
    assert found["numpy"] == ["numpy"]


def test_notebook_packages_only_when_imported_directly():
    pytest.importorskip("IPython")
    pins = by_name(capture_requirements(["IPython"]))
    assert "ipython" in pins and pins["ipython"].because == ["IPython"]
    # ipykernel requires ipython, jupyter-client...: asked for by name it is pinned, its notebook deps are not.
    pins = by_name(capture_requirements([], distributions=["ipykernel"]))
    assert "ipykernel" in pins and pins["ipykernel"].because == ["requested"]
    assert "ipython" not in pins and not any(n.startswith("jupyter") for n in pins)


def test_explicit_distributions_and_extras_only_requirements():
    pins = by_name(capture_requirements([], distributions=["httpx", "not-installed-mlship"]))
    assert "httpx" in pins and "not-installed-mlship" not in pins
    # httpx's extras (brotli, h2, socksio, rich, click...) are not pulled in
    assert "h2" not in pins and "socksio" not in pins and "rich" not in pins


def test_test_requirements_are_pytest_and_httpx_closed():
    pins = by_name(test_requirements())
    assert pins["pytest"].version == importlib.metadata.version("pytest")
    assert pins["httpx"].version == importlib.metadata.version("httpx")
    assert {"pluggy", "iniconfig", "httpcore", "anyio", "idna"} <= set(pins)


def test_test_tools_the_kernel_lacks_come_from_the_table(monkeypatch):
    """pytest and httpx are not dependencies of jupyter-mlship: a kernel without them still gets pins."""
    monkeypatch.setitem(environment.TEST_TOOLS, "pytest", ("8.4.2", "<1"))  # the kernel's pytest is not accepted
    monkeypatch.setitem(environment.TEST_TOOLS, "mlship-missing-tool", ("1.2.3", ">=1"))  # nor installed at all
    pins = by_name(test_requirements())
    assert pins["pytest"].line == "pytest==8.4.2" and pins["pytest"].because == ["tests"]
    assert pins["mlship-missing-tool"].line == "mlship-missing-tool==1.2.3"
    assert "pluggy" not in pins  # pytest's dependencies are left to the installer
    assert pins["httpx"].version == importlib.metadata.version("httpx") and "httpcore" in pins


@pytest.mark.parametrize("schema, result_module, formats, numpy, pandas", [
    (InputSchema(kind="records"), "builtins", [], False, False),  # a pure-Python model
    (InputSchema(kind="strings"), "builtins", ["skops"], False, False),
    (InputSchema(kind="strings"), "numpy", [], True, False),  # outputs an array
    (InputSchema(kind="ndarray", width=2, dtype="float64"), "builtins", [], True, False),
    (InputSchema(kind="scalars", dtype="int64"), "builtins", [], True, False),  # a 1-D array sample
    (InputSchema(kind="scalars"), "builtins", ["npy"], True, False),  # a numpy artifact
    (InputSchema(kind="records"), "torch", ["torch-state-dict"], True, False),  # tensors leave through .numpy()
    (InputSchema(kind="dataframe"), "builtins", [], True, True),
    (InputSchema(kind="records"), "pandas.core.series", [], True, True),
])
def test_service_modules_pin_numpy_and_pandas_only_where_needed(schema, result_module, formats, numpy, pandas):
    modules = service_modules(["math", "re"], formats, schema, result_module)
    assert {"fastapi", "pydantic", "uvicorn", "prometheus_client"} <= set(modules)
    assert ("numpy" in modules, "pandas" in modules) == (numpy, pandas)


def test_service_modules_keep_what_the_code_imports():
    modules = service_modules(["sklearn.linear_model", "numpy"], ["xgboost-json"], InputSchema(kind="records"), "builtins")
    assert {"sklearn", "numpy", "xgboost"} <= set(modules) and "pandas" not in modules


def test_fast_for_a_service_sized_set():
    modules = ["sklearn", "numpy", "pandas", "scipy", "fastapi", "pydantic", "uvicorn", "skops", "yaml", "httpx"]
    capture_requirements(modules)  # warm the module index
    started = time.perf_counter()
    requirements = capture_requirements(modules)
    assert time.perf_counter() - started < 0.5
    assert len(requirements) >= 20


def test_pip_config_list_parsing_and_precedence():
    text = "\n".join([
        "global.extra-index-url='file:///opt/pypi/simple file:///opt/pypi-more/simple'",
        "global.find-links='/opt/wheels'",
        "global.index-url='https://mirror.example/simple'",
        "install.index-url='https://install.example/simple'",
        ":env:.find-links='/env/wheels /more/wheels'",
        "global.cert='/etc/ssl/certs/ca-certificates.crt'",
        "user.ignored='x'",
    ])
    values = dict(_parse_config_list(text))
    assert values["extra-index-url"] == "file:///opt/pypi/simple file:///opt/pypi-more/simple"
    assert values["find-links"] == "/env/wheels /more/wheels"  # PIP_* variables beat config files
    assert values["index-url"] == "https://install.example/simple"  # [install] beats [global]
    assert "ignored" not in values


def test_pip_index_settings_follow_pip_environment_variables(monkeypatch):
    monkeypatch.setenv("PIP_INDEX_URL", "https://private.example/simple")
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "https://a.example/simple https://b.example/simple")
    monkeypatch.setenv("PIP_FIND_LINKS", "/tmp/wheels-mlship")
    monkeypatch.setenv("PIP_TRUSTED_HOST", "private.example")
    settings = pip_index_settings()
    assert settings.index_url == "https://private.example/simple"
    assert settings.extra_index_urls == ["https://a.example/simple", "https://b.example/simple"]
    assert settings.find_links == ["/tmp/wheels-mlship"]
    assert settings.uv_args() == [
        "--index-url", "https://private.example/simple",
        "--extra-index-url", "https://a.example/simple", "--extra-index-url", "https://b.example/simple",
        "--find-links", "/tmp/wheels-mlship", "--allow-insecure-host", "private.example",
    ]


def test_pip_index_settings_read_a_real_pip_config_through_pip(tmp_path, monkeypatch):
    """pip itself reads the file (`pip config list`): every key verify and build carry over comes through."""
    config = tmp_path / "pip.conf"
    config.write_text(
        "[global]\nindex-url = https://private.example/simple\n"
        "extra-index-url = file:///srv/pypi/simple\n  file:///srv/pypi-more/simple\n"
        "find-links = /srv/wheels\ntrusted-host = private.example\ncert = /srv/ca.pem\nno-index = false\n"
    )
    for name in list(os.environ):
        if name.startswith("PIP_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PIP_CONFIG_FILE", str(config))
    settings = pip_index_settings()
    assert settings == PipIndexSettings(
        index_url="https://private.example/simple",
        extra_index_urls=["file:///srv/pypi/simple", "file:///srv/pypi-more/simple"],
        find_links=["/srv/wheels"], trusted_hosts=["private.example"], cert="/srv/ca.pem", no_index=False,
    )
    assert settings.uv_env()["SSL_CERT_FILE"] == "/srv/ca.pem"


def test_pip_index_settings_rank_config_sections_and_let_variables_win(tmp_path, monkeypatch):
    config = tmp_path / "pip.conf"
    config.write_text(
        "[global]\nfind-links = /srv/global-wheels\n"
        "extra-index-url = file:///srv/pypi/simple https://mirror.example/simple\n"
        "trusted-host = global.example\ncert = /srv/ca.pem\n"
        "[install]\ntrusted-host = mirror.example\n"
    )
    monkeypatch.setenv("PIP_CONFIG_FILE", str(config))
    for name in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST", "PIP_INDEX_URL", "PIP_CERT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PIP_FIND_LINKS", "/srv/env-wheels")
    settings = pip_index_settings()
    assert settings.find_links == ["/srv/env-wheels"]  # PIP_* variables win over files
    assert settings.extra_index_urls == ["file:///srv/pypi/simple", "https://mirror.example/simple"]
    assert settings.trusted_hosts == ["mirror.example"]  # [install] wins over [global], as in pip install
    assert settings.cert == "/srv/ca.pem"
