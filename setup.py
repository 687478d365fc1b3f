import ast
from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
# The version lives alone in sklearn_ltr/_version.py, so that it is read here without
# importing the package (whose dependencies may not be installed yet).
version = {
    node.targets[0].id: ast.literal_eval(node.value)
    for node in ast.parse((here / "sklearn_ltr" / "_version.py").read_text()).body
    if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
}

setup(
    name="sklearn_ltr",
    version=version["__version__"],
    description=(
        "Low-tensor-rank recurrent network models of neural activity over learning, "
        "as scikit-learn estimators"),
    long_description=(here / "README.rst").read_text(),
    long_description_content_type="text/x-rst",
    license="BSD-3-Clause",
    packages=find_packages(include=["sklearn_ltr", "sklearn_ltr.*"]),
    python_requires=">=3.10",
    install_requires=[
        "numpy>=1.24",
        "scipy>=1.9",
        "scikit-learn>=1.6",
        "torch>=2.1",
        "tensorly>=0.8",
        "joblib>=1.2",
        "tqdm>=4.60",
    ],
    extras_require={
        "plot": ["matplotlib>=3.6"],
        # sklearn_ltr.io: read_nwb (pynwb) and from_pynapple (pynapple, which brings
        # numba and llvmlite, hence its own extra and not in "test").
        "nwb": ["pynwb>=2.0"],
        "pynapple": ["pynapple>=0.6"],
        "test": ["pytest>=7", "pytest-xdist>=3", "ruff>=0.5", "matplotlib>=3.6",
                 "hypothesis>=6", "pandas>=1.5", "distributed>=2023.1",
                 "pynwb>=2.0"],
        # the documentation site (doc/): see the README for the build command
        "docs": ["sphinx>=7", "numpydoc>=1.6", "sphinx-gallery>=0.16",
                 "matplotlib>=3.6"],
    },
    entry_points={"console_scripts": ["sklearn-ltr=sklearn_ltr.__main__:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Intended Audience :: Science/Research",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
