"""The service imports skops without its slowest start-up step, and finds the same type names.

On import skops names every ufunc of scipy.special by searching sys.modules for the module holding it
(a getattr per module, per ufunc: 0.16 s of a service's start). app.loaders gives skops a search with
the same answers, faster. These tests compare its answers with skops' own.
"""

from __future__ import annotations

import subprocess
import sys
import types

import numpy as np
import pytest
import scipy.special

from jupyter_mlship.runtime import runtime_module, template_dir

skops_utils = pytest.importorskip("skops.io._utils")
loaders = runtime_module("loaders")


def skops_whichmodule():
    """skops' own search, even where this process already replaced it."""
    found = skops_utils.whichmodule
    return found.args[0] if hasattr(found, "args") else found


def test_the_faster_search_names_every_ufunc_as_skops_does():
    original = skops_whichmodule()
    ufuncs = [getattr(scipy.special, name) for name in dir(scipy.special)]
    ufuncs = [u for u in ufuncs if isinstance(u, np.ufunc)] + [np.add, np.log1p]
    assert len(ufuncs) > 100
    for ufunc in ufuncs:
        assert loaders.whichmodule(original, ufunc, ufunc.__name__) == original(ufunc, ufunc.__name__), ufunc


def test_a_module_that_makes_attributes_up_is_asked_like_skops_asks_it(monkeypatch):
    """A lazy or deprecated module (its own __getattr__) comes first in sys.modules: both name it."""
    original = skops_whichmodule()
    target = scipy.special.expit
    lazy = types.ModuleType("aaa_lazy_shim")
    lazy.__getattr__ = lambda name: target if name == "expit" else (_ for _ in ()).throw(AttributeError(name))
    modules = {"aaa_lazy_shim": lazy, **sys.modules}
    monkeypatch.setattr(sys, "modules", modules)
    assert original(target, "expit") == "aaa_lazy_shim"
    assert loaders.whichmodule(original, target, "expit") == "aaa_lazy_shim"
    lost = object()  # held by no module: both say __main__
    assert loaders.whichmodule(original, lost, "nowhere_to_be_found") == original(lost, "nowhere_to_be_found")


def test_a_module_imported_after_a_search_is_searched_too(monkeypatch):
    """The search keeps its list of modules between calls (skops asks some 800 times), and takes it again
    when a module was imported since."""
    original = skops_whichmodule()
    found_later = object()
    assert loaders.whichmodule(original, found_later, "found_later") == "__main__"
    late = types.ModuleType("zzz_imported_later")
    late.found_later = found_later
    monkeypatch.setitem(sys.modules, "zzz_imported_later", late)
    assert loaders.whichmodule(original, found_later, "found_later") == "zzz_imported_later"
    assert original(found_later, "found_later") == "zzz_imported_later"


IMPORT_AND_COMPARE = """
import sys, functools
sys.path.insert(0, "app")
import loaders
skops_io = loaders._import_skops_io(by_name=sys.argv[1] == "by-name")
from skops.io import _trusted_types, _utils
replaced = _utils.whichmodule
assert isinstance(replaced, functools.partial) and replaced.func is loaders.whichmodule, replaced
assert loaders._AfterImport not in map(type, sys.meta_path)  # the finder is gone after the import
names = list(_trusted_types.SCIPY_UFUNC_TYPE_NAMES)
_utils.whichmodule = replaced.args[0]  # skops' own search, for the same list
import scipy.special, numpy as np
assert names == _utils.get_public_type_names(module=scipy.special, oftype=np.ufunc), "lists differ"
print(len(names))
"""


@pytest.mark.parametrize("trust", ["by-name", "skops-default"])
def test_the_service_imports_skops_with_the_faster_search_and_gets_skops_own_trust_list(trust):
    """In a fresh interpreter, as the service starts (with a manifest that names its estimators, or an
    older one that does not): skops.io._utils gets the search, skops' default trust list of scipy ufuncs
    is the one its own search gives, and the import hook is removed."""
    project = template_dir() / "{{cookiecutter.name}}"
    result = subprocess.run([sys.executable, "-c", IMPORT_AND_COMPARE, trust], cwd=project,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert int(result.stdout.split()[-1]) > 100


QUICK_START = """
import sys
sys.path.insert(0, "app")
import loaders
with loaders.quick_start():
    import sklearn.ensemble, scipy.stats
from scipy._lib import _array_api
assert _array_api.FunctionDoc is loaders._KeptDocstring, _array_api.FunctionDoc
assert loaders._AfterImport not in map(type, sys.meta_path)  # the finder is gone after the imports
doc = scipy.stats.zscore.__doc__
assert doc.startswith("Compute the z score") and "Parameters" in doc, doc[:300]
assert "array API" not in doc and "Array API" not in doc  # the backends table was not added
print(scipy.stats.zscore([1.0, 2.0, 3.0]).tolist())
"""


def test_quick_start_keeps_scipy_docstrings_as_written_and_scipy_works():
    """The service imports the model's code under loaders.quick_start(): scipy's xp_capabilities keeps each
    function's docstring instead of parsing and re-rendering it (600 of them when scikit-learn imports
    scipy.stats); scipy computes as before."""
    project = template_dir() / "{{cookiecutter.name}}"
    result = subprocess.run([sys.executable, "-c", QUICK_START], cwd=project, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split("\n")[0] == str(scipy.stats.zscore([1.0, 2.0, 3.0]).tolist())
    with_table = scipy.stats.zscore.__doc__  # this process imported scipy.stats as scipy does
    assert "Array API" in with_table or "array API" in with_table  # the table the shortcut leaves out


def test_a_scipy_whose_decorator_works_otherwise_keeps_its_own_docstring_parser():
    """The shortcut is tried on a function first; where the decorator needs more of the parsed docstring
    than the stand-in has, scipy keeps its FunctionDoc."""
    module = types.ModuleType("fake_array_api")

    class FunctionDoc:
        def __init__(self, function):
            self.sections = {"Notes": []}

    def xp_capabilities(capabilities_table=None):
        def decorator(function):
            FunctionDoc_ = module.FunctionDoc
            FunctionDoc_(function).sections["Notes"].append("table")  # the stand-in has no .sections
            return function
        return decorator

    module.FunctionDoc, module.xp_capabilities = FunctionDoc, xp_capabilities
    loaders._plain_capability_docstrings(module)
    assert module.FunctionDoc is FunctionDoc
    works = types.ModuleType("fake_array_api_2")
    works.FunctionDoc = FunctionDoc
    works.xp_capabilities = lambda capabilities_table=None: lambda function: function  # keeps the text
    loaders._plain_capability_docstrings(works)
    assert works.FunctionDoc is loaders._KeptDocstring
