"""The version of sklearn_ltr, alone in its module.

``setup.py`` reads it without importing the package (and so without its
dependencies), and modules of the package (e.g. the persistence code, which records
it in every model file) import it without importing the package root, which imports
every estimator.
"""

__version__ = "0.1.0.dev0"
