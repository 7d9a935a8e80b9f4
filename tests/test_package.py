"""The package's public face: namespaces, and a core that leaves recipes out."""

import ast
import pathlib
import subprocess
import sys

NAMESPACES = (
    "backbones",
    "batch_norm",
    "callbacks",
    "codes",
    "datasets",
    "distribute",
    "export",
    "index",
    "labels",
    "layers",
    "losses",
    "metrics",
    "models",
    "schedules",
    "training",
    "visualization",
)


def test_import_keras_hash_leaves_the_recipes_and_optional_engines_out():
    # A fresh interpreter: this test session may have imported them already.
    left_out = ("keras_hash.recipes", "pymilvus", "apache_beam", "faiss")
    code = (
        "import sys, keras_hash\n"
        f"print(sorted(m for m in sys.modules if m.startswith({left_out!r})))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_declared_namespaces_and_top_level_names():
    import keras_hash

    for name in NAMESPACES:
        assert name in keras_hash.__all__, name
        assert getattr(keras_hash, name).__name__ == f"keras_hash.{name}"
    for name in ("HashNet", "DHN", "DCH", "CSQ", "DPSH", "HammingIndex"):
        assert name in keras_hash.__all__ and hasattr(keras_hash, name), name


def test_product_code_imports_no_recipe():
    """What the product runs or saves needs no research recipe (issue 34):
    no module-level import of keras_hash.recipes outside it."""
    root = pathlib.Path(__file__).resolve().parent.parent
    product = [
        path
        for path in (root / "keras_hash").rglob("*.py")
        if "recipes" not in path.relative_to(root).parts
    ]
    for path in [*product, root / "export" / "export_model.py"]:
        for node in ast.parse(path.read_text(), str(path)).body:
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            bad = [n for n in names if n.startswith("keras_hash.recipes")]
            assert not bad, f"{path.relative_to(root)} imports {bad}"
