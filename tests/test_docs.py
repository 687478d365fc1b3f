"""The documentation site's sources keep up with the package and the README.

* every public name has a page in the API reference (``doc/api.rst``), so a new
  function or module cannot be forgotten;
* the README links to every user-guide page and the site's index lists them all;
* the estimators' docstrings document every parameter and fitted attribute (the
  API pages are built from them).

The site itself is built by the second line of ``.ci/run`` (warnings are errors).
"""

import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest
from sklearn.base import BaseEstimator

import sklearn_ltr

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "doc"
API = DOC / "api.rst"


def _public_modules():
    """Every public module of the package (the command line excepted)."""
    names = [m.name for m in pkgutil.iter_modules(sklearn_ltr.__path__)
             if not m.name.startswith("_")]
    return ["sklearn_ltr"] + [f"sklearn_ltr.{name}" for name in sorted(names)]


def _documented_names(text):
    """Full names that ``api.rst`` gives a page (autosummary) or an entry (py:data)."""
    names, module, in_summary = set(), None, False
    for line in text.splitlines():
        if m := re.match(r"\.\. currentmodule:: (\S+)", line):
            module = m.group(1)
        elif m := re.match(r"\.\. py:data:: (\S+)", line):
            names.add(f"{module}.{m.group(1)}")
        elif line.startswith(".. autosummary::"):
            in_summary = True
        elif in_summary and re.match(r"   [A-Za-z_]\w*$", line):
            names.add(f"{module}.{line.strip()}")
        elif in_summary and line and not line.startswith(" "):
            in_summary = False
    return names


def _resolve(full_name):
    module, _, name = full_name.rpartition(".")
    return getattr(importlib.import_module(module), name)


def test_api_reference_parser_sees_the_entries():
    documented = _documented_names(API.read_text())
    assert "sklearn_ltr.LowTensorRankRNN" in documented
    assert "sklearn_ltr.model_selection.learning_test" in documented
    assert "sklearn_ltr.__version__" in documented


@pytest.mark.parametrize("module_name", _public_modules())
def test_every_public_name_has_an_api_page(module_name):
    module = importlib.import_module(module_name)
    assert hasattr(module, "__all__"), (
        f"{module_name} has no __all__: list its public names there and give each a "
        f"page in doc/api.rst.")
    documented = _documented_names(API.read_text())
    objects = [_resolve(name) for name in documented]
    missing = [
        name for name in module.__all__
        if f"{module_name}.{name}" not in documented
        # a re-export is documented once, where it is defined
        and not any(getattr(module, name) is obj for obj in objects)]
    assert not missing, (
        f"{module_name}.__all__ names {missing} but doc/api.rst has no entry for "
        f"them: add each to an autosummary list there (a new module gets its own "
        f"section).")


def test_every_api_entry_exists():
    # A renamed or removed name would otherwise only fail the site's build.
    for name in _documented_names(API.read_text()):
        _resolve(name)


# sg_execution_times.rst is written by the gallery's build.
USER_GUIDE = sorted(p.stem for p in DOC.glob("*.rst")
                    if p.stem not in ("index", "sg_execution_times"))


def test_readme_links_to_every_user_guide_page():
    readme = (ROOT / "README.rst").read_text()
    links = set(re.findall(r"<(doc/[^>]+)>`_", readme))
    for link in links:
        assert (ROOT / link).is_file(), f"README links to {link}, which does not exist"
    missing = [name for name in USER_GUIDE if f"doc/{name}.rst" not in links]
    assert not missing, f"README does not link to doc/{missing[0]}.rst"
    for image in re.findall(r"\.\. image:: (\S+)", readme):
        assert (ROOT / image).is_file(), image


def test_site_index_lists_every_page():
    index = (DOC / "index.rst").read_text()
    toctree = set(re.findall(r"^   (\S+)$", index, flags=re.M))
    assert set(USER_GUIDE) <= toctree, set(USER_GUIDE) - toctree
    assert "auto_examples/index" in toctree


def test_gallery_has_its_header():
    # sphinx-gallery refuses a folder of examples without one.
    assert (ROOT / "examples" / "README.txt").is_file()


def _section_names(doc, section):
    """Names of the entries (``name : type``) of one numpydoc section."""
    lines = inspect.cleandoc(doc).splitlines()
    start = lines.index(section) + 2  # the title and its underline
    names = []
    for line in lines[start:]:
        if line and not line.startswith(" ") and " : " not in line and names:
            break  # the next section's title
        if re.match(r"(\w+)(, \w+)* :", line):
            names += [n.strip() for n in line.split(":")[0].split(",")]
    return set(names)


ESTIMATORS = [getattr(sklearn_ltr, name) for name in sklearn_ltr.__all__
              if inspect.isclass(getattr(sklearn_ltr, name))
              and issubclass(getattr(sklearn_ltr, name), BaseEstimator)]


@pytest.mark.parametrize("cls", ESTIMATORS, ids=lambda c: c.__name__)
def test_estimator_docstring_documents_parameters_and_attributes(cls):
    params = set(inspect.signature(cls).parameters)
    assert _section_names(cls.__doc__, "Parameters") == params
    attributes = _section_names(cls.__doc__, "Attributes")
    # The public fitted state ``load`` restores ("name?": may be absent).
    fitted = {name.rstrip("?") for name in getattr(cls, "_fitted_schema", None) or ()
              if not name.startswith("_")}
    assert fitted <= attributes, fitted - attributes
