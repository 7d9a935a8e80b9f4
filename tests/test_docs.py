"""The docs cannot rot: snippets and commands of README.md and docs/*.md are checked.

- README's Python snippets (Quickstart, own data, beyond one machine) run,
  in order, on small generated data standing in for downloads; the one
  documented exception is ImageNet weights, run with ``weights=None``.
- Every Python snippet of the docs compiles, and every name it imports from
  keras_hash (``from keras_hash.x import y``, ``keras_hash.x.y``) exists.
- Every command that runs one of our scripts or modules
  (``python examples/x.py --flag``, ``python -m keras_hash.x --flag``) uses
  flags that the script defines, and every ``keras-hash[extra]`` exists.

A renamed argument, flag, module or extra then fails here, not for a user.
"""

import ast
import configparser
import glob
import importlib
import os
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = sorted(
    [os.path.join(REPO, "README.md")]
    + glob.glob(os.path.join(REPO, "docs", "*.md"))
    + glob.glob(os.path.join(REPO, "*", "README.md"))
)
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)


def blocks(path, languages):
    with open(path, encoding="utf-8") as file:
        text = file.read()
    return [body for lang, body in FENCE.findall(text) if lang in languages]


def doc_id(path):
    return os.path.relpath(path, REPO)


PYTHON = [(doc_id(p), i, b) for p in DOCS for i, b in enumerate(blocks(p, {"python"}))]


def _commands(body):
    """Shell lines of a block, continuations joined, comments dropped."""
    body = body.replace("\\\n", " ")
    for line in body.splitlines():
        line = line.split(" #")[0].strip()
        if line and not line.startswith("#"):
            yield from (part.strip() for part in line.split("&&"))


COMMANDS = [
    (doc_id(p), command)
    for p in DOCS
    for body in blocks(p, {"bash", "shell", "sh"})
    for command in _commands(body)
]


@pytest.mark.numpy_only
@pytest.mark.parametrize("doc, number, code", PYTHON, ids=lambda v: str(v)[:40])
def test_every_python_snippet_compiles_and_its_keras_hash_names_exist(
    doc, number, code
):
    tree = ast.parse(code, filename=f"{doc} snippet {number}")
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
            "keras_hash"
        ):
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name) or importlib.util.find_spec(
                    f"{node.module}.{alias.name}"
                ), f"{doc}: {node.module} has no {alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("keras_hash"):
                    importlib.import_module(alias.name)
        elif isinstance(node, ast.Attribute):
            dotted = _dotted(node)
            if dotted and dotted.startswith("keras_hash."):
                _resolve(dotted, doc)


def _dotted(node):
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id, *reversed(parts)])
    return None


def _resolve(dotted, doc):
    """Imports/gets ``keras_hash.a.b.c`` as far as modules and attributes go."""
    parts = dotted.split(".")
    value = importlib.import_module(parts[0])
    for i, part in enumerate(parts[1:], start=1):
        if hasattr(value, part):
            value = getattr(value, part)
            continue
        name = ".".join(parts[: i + 1])
        if importlib.util.find_spec(name) is None:
            raise AssertionError(f"{doc}: {dotted} does not exist (at {part!r})")
        value = importlib.import_module(name)


def _script_flags(target):
    """The flags a script or module defines, from its --helpfull/--help."""
    argv = [sys.executable, *target, "--helpfull"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        argv, capture_output=True, text=True, cwd=REPO, env=env, timeout=180
    )
    text = result.stdout + result.stderr
    if "--helpfull" in text and "unrecognized" in text:  # argparse
        result = subprocess.run(
            [*argv[:-1], "--help"], capture_output=True, text=True, cwd=REPO, env=env
        )
        text = result.stdout + result.stderr
    return set(re.findall(r"--(?:\[no\])?([A-Za-z_][\w-]*)", text))


_FLAGS = {}


def _extras():
    config = configparser.ConfigParser()
    config.read(os.path.join(REPO, "setup.cfg"))
    return set(config["options.extras_require"])


OUR_COMMANDS = [
    (doc, command)
    for doc, command in COMMANDS
    if re.search(r"python3?\s+(-m\s+keras_hash|examples/|export/|benchmarks/)", command)
    and "..." not in command
]


@pytest.mark.slow
@pytest.mark.parametrize("doc, command", OUR_COMMANDS, ids=lambda v: str(v)[:60])
def test_every_documented_command_uses_existing_flags(doc, command):
    words = shlex.split(command)
    start = next(i for i, w in enumerate(words) if re.search(r"python3?$", w))
    words = words[start + 1 :]
    target = words[:2] if words[0] == "-m" else words[:1]
    if target[0] != "-m":
        assert os.path.exists(os.path.join(REPO, target[0])), f"{doc}: {target[0]}"
    key = tuple(target)
    if key not in _FLAGS:
        _FLAGS[key] = _script_flags(target)
    for word in words[len(target) :]:
        if word.startswith("--"):
            name = word[2:].split("=")[0]
            bare = name[2:] if name.startswith("no") else name
            known = name in _FLAGS[key] or bare in _FLAGS[key]
            if not known and key == ("-m", "keras_hash.beam"):
                known = _beam_option(name)  # passed through to Beam's runner
            assert known, f"{doc}: {' '.join(target)} has no flag --{name}"


def _beam_option(name):
    """Whether ``--name`` is an Apache Beam pipeline option (--runner, ...)."""
    from apache_beam.options.pipeline_options import PipelineOptions

    return name in PipelineOptions([f"--{name}=1"]).get_all_options()


@pytest.mark.numpy_only
def test_every_documented_extra_exists():
    extras = _extras()
    for doc, command in COMMANDS:
        pattern = r"keras-hash\[([\w,-]+)\]|\"\.\[([\w,-]+)\]\"|whl\)\[([\w,-]+)\]"
        for extra_list in re.findall(pattern, command):
            for extra in ",".join(extra_list).split(","):
                if extra:
                    assert extra in extras, f"{doc}: no extra {extra!r} in setup.cfg"


def _python_blocks(name):
    return blocks(os.path.join(REPO, name), {"python"})


@pytest.mark.slow
def test_readme_python_snippets_run_on_generated_data(tmp_path, monkeypatch):
    """README's snippets in order, in one namespace, on small generated images."""
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    labels = np.arange(256) % 4  # 256: the IVF snippet's nprobe=16 needs 16 lists
    images = (
        rng.uniform(0, 60, (256, 96, 96, 3)) + 60 * labels[:, None, None, None]
    ).astype(np.float32)
    for i, label in enumerate(labels[:16]):
        os.makedirs(f"photos/train/c{label}", exist_ok=True)
        Image.fromarray(images[i].astype(np.uint8)).save(
            f"photos/train/c{label}/{i}.png"
        )
    with open("images.csv", "w") as file:
        for i in range(16):
            file.write(f"photos/train/c{labels[i]}/{i}.png,c{labels[i]};all\n")
    namespace = {
        "images": images,
        "labels": labels,
        "queries": images[:8],
        "query_labels": labels[:8],
    }
    for number, code in enumerate(_python_blocks("README.md")):
        # The documented exception: no ImageNet download in tests.
        code = code.replace('weights="imagenet"', "weights=None")
        code = code.replace("epochs=10", "epochs=1")
        exec(compile(code, f"README.md snippet {number}", "exec"), namespace)
    assert namespace["index"] is not None
