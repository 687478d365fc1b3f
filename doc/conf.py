"""Sphinx configuration of the sklearn_ltr documentation site.

Build from the repository root (the README gives the same command)::

    python -m sphinx -W --keep-going -b html doc doc/_build/html

The examples in ``examples/`` become the gallery. They run in their fast mode
(``SKLEARN_LTR_EXAMPLES_FAST=1``, a minute or so in all) unless the variable is
already set, e.g. ``SKLEARN_LTR_EXAMPLES_FAST=0`` for the full runs; add
``-D plot_gallery=0`` to build the gallery pages without running them.
"""

import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The checkout's package, whatever else is installed.
sys.path.insert(0, str(ROOT))

import sklearn_ltr  # noqa: E402

# --------------------------------------------------------------------------- #
# project
# --------------------------------------------------------------------------- #
project = "sklearn_ltr"
author = "the sklearn_ltr developers"
copyright = "the sklearn_ltr developers"  # noqa: A001 (Sphinx's name)
release = sklearn_ltr.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

exclude_patterns = ["_build", "generated/*.examples", "auto_examples/*.ipynb",
                    "auto_examples/*.py", "auto_examples/*.zip",
                    "auto_examples/*.json", "auto_examples/*.md5",
                    "auto_examples/*.codeobj.json"]
templates_path = ["_templates"]
default_role = "literal"
nitpicky = False

# --------------------------------------------------------------------------- #
# API reference: autosummary writes one page per public name into generated/
# --------------------------------------------------------------------------- #
autosummary_generate = True
autosummary_imported_members = False
autodoc_default_options = {"members": True, "inherited-members": True}
autodoc_typehints = "none"
# numpydoc lists the methods itself from the templates in _templates/; its own
# member tables would repeat them.
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

# scikit-learn's metadata-routing and output methods (``set_fit_request``,
# ``get_metadata_routing``, ``set_output``) are inherited unchanged, and their
# docstrings refer to labels of scikit-learn's own site; the class pages name them
# instead of copying them (see _templates/autosummary/class.rst).
SKLEARN_METHODS = ("get_metadata_routing", "set_output")


def _skip_sklearn_methods(app, what, name, obj, skip, options):
    if name in SKLEARN_METHODS or re.fullmatch(r"set_\w+_request", name):
        return True
    return None


def setup(app):
    app.connect("autodoc-skip-member", _skip_sklearn_methods)

# --------------------------------------------------------------------------- #
# gallery: the examples, in their fast mode unless told otherwise
# --------------------------------------------------------------------------- #
os.environ.setdefault("SKLEARN_LTR_EXAMPLES_FAST", "1")
# The examples save their figures here, not next to the sources (the gallery shows
# the figures sphinx-gallery captures).
os.environ.setdefault("SKLEARN_LTR_EXAMPLES_OUT",
                      str(Path(__file__).parent / "_build" / "example_figures"))
os.environ.setdefault("MPLBACKEND", "Agg")

# An example of recordings that are not on this machine stops with a message (and
# sys.exit, which would end the build): the gallery shows its code without running it.
RECORDINGS = ROOT.parent / "shared" / "data" / "bci_learning_hennig2018.npz"
RUN = r"/plot_" if RECORDINGS.exists() else r"/plot_(?!bci_learning)"

sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": RUN,
    "within_subsection_order": "FileNameSortKey",
    "download_all_examples": False,
    "remove_config_comments": True,
    "show_memory": False,
    "min_reported_time": 1,
    "backreferences_dir": "generated/backreferences",
    "doc_module": ("sklearn_ltr",),
}

# --------------------------------------------------------------------------- #
# HTML
# --------------------------------------------------------------------------- #
# Literal blocks (``::``) are mostly shell commands; Python gets ``code-block``.
highlight_language = "none"
html_theme = "alabaster"
html_title = f"sklearn_ltr {release}"
html_static_path = []
html_theme_options = {
    "description": "Low-tensor-rank recurrent network models of neural activity "
                   "over learning, as scikit-learn estimators",
    "fixed_sidebar": True,
    # wide enough for the README's 88-column code blocks
    "page_width": "1240px",
    "sidebar_width": "220px",
    "code_font_size": "0.8em",
}
html_show_sourcelink = False
