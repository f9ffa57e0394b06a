"""Sphinx configuration of the METIS toolkit docs (``make docs``; warnings are errors)."""

from __future__ import annotations

import importlib.metadata

project = "METIS toolkit"
author = "METIS toolkit contributors"
copyright = "2026, METIS toolkit contributors"
release = importlib.metadata.version("metis-core")
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3
exclude_patterns = ["_build", "scripts", "Thumbs.db", ".DS_Store"]

html_theme = "furo"
html_title = f"METIS toolkit {release}"
html_static_path = ["_static"]

autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_class_signature = "separated"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

# No intersphinx (the docs build offline); types of other projects are not cross-referenced.
nitpicky = True
nitpick_ignore_regex = [
    (
        r"py:.*",
        r"(torch|numpy|np|click|pluggy|pyarrow|PIL|matplotlib|transformers|tokenizers|av|gymnasium|mujoco)(\..*)?",
    ),
    (
        r"py:.*",
        r"(Tensor|ndarray|ArrayT|Path|PathLike|os\.PathLike|Any|Callable|Iterator|Iterable)",
    ),
    (r"py:.*", r"(collections\.abc|typing|pathlib|os|dataclasses|enum|importlib)\..*"),
    (r"py:.*", r"(Sequence|Mapping|Generator|ClassVar|Self|TypeVar|T|_F|EntryPoint)"),
    (r"py:.*", r"(abc|vector_quantize_pytorch|pytorch_kinematics|dex_retargeting|pluggy)\..*"),
    (r"py:.*", r".*\._.*"),  # private helpers named in signatures
    (r"py:.*", r"metis_sim\.(experts|scene)\..*"),  # the scene builder and experts are internal
    (r"py:.*", r".*\.(ArrayT|ConfigT|ComponentT|T)"),  # type variables
    # Docstrings name classes of their own module by short name (``:class:`IKResult```); where
    # Sphinx cannot resolve one it is shown as code, which is what a reader needs.
    (r"py:.*", r"[A-Za-z_][A-Za-z0-9_]*(\.[a-z_][A-Za-z0-9_]*)?"),
]
