"""The layer contract of docs/ARCHITECTURE.md, enforced: no import runs from a lower layer to a higher one, and the
shared vocabulary is the one definition its users agree with.

`python tests/test_architecture.py` prints the diagram block that docs/ARCHITECTURE.md holds (generated from
LAYERS below, so the picture and the rule cannot drift apart).
"""

import ast
import itertools
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Lowest first. A module may import its own layer and the layers below it, never one above.
LAYERS: list[tuple[str, tuple[str, ...], str]] = [
    ("ground", ("vocabulary", "errors", "devices", "environment", "atomic", "medm2g_core"),
     "shared words, errors, devices, folders, the one atomic writer"),
    ("io", ("io",), "the Volume; DICOM, NIfTI, PNG read and write"),
    ("data", ("data",), "manifests, dataset adapters, cache, report labeler"),
    ("models", ("models",), "networks, noise schedule, the one sampling loop, model folders"),
    ("metrics", ("metrics",), "image and text metrics checked against references"),
    ("phantoms", ("phantoms",), "the paired phantom world"),
    ("hub", ("hub",), "model resolution: embedded default, folder, name, Hub id"),
    ("training and sampling", ("training", "sampling"),
     "recipes, trainer, stages, retrieval | guides, routes, translate, report, generate"),
    ("evaluation", ("evaluation",), "the paper's tasks with baselines, result pages"),
    ("applications", ("apps", "api"), "demo, corpora, run records; the Python API"),
    ("cli", ("medm2g_cli",), "parse, one call, print"),
]
# Pairs forbidden although the order allows them: networks know nothing of files, and training and sampling are
# two pipelines over the models that share no code but what lies below them.
FORBIDDEN = {("models", "io"), ("training", "sampling"), ("sampling", "training")}


def group_of(module: str) -> str:
    """``medm2g_core.sampling.translate`` -> ``sampling``; ``medm2g_core.hub`` -> ``hub``; the CLI is one group."""
    parts = module.split(".")
    if parts[0] == "medm2g_cli":
        return "medm2g_cli"
    return parts[1] if len(parts) > 1 else "medm2g_core"


LEVEL = {group: number for number, (_, groups, _) in enumerate(LAYERS) for group in groups}


def imports() -> list[tuple[str, str, int]]:
    """(importing module, imported module, line) for every import of medm2g code, lazy ones included."""
    found = []
    for package in ("medm2g_core", "medm2g_cli"):
        for path in sorted((REPO / package).rglob("*.py")):
            module = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [f"{node.module}.{a.name}" for a in node.names] if node.module == "medm2g_core" \
                        else [node.module]
                elif isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                else:
                    continue
                ours = [name for name in names if name.startswith(("medm2g_core", "medm2g_cli"))]
                found += [(module, name, node.lineno) for name in ours]
    return found


def _target_group(name: str) -> str:
    group = group_of(name)
    return "medm2g_core" if group == "__version__" else group


def test_every_module_belongs_to_a_layer():
    groups = {group_of(m) for m, _, _ in imports()} | {_target_group(t) for _, t, _ in imports()}
    assert groups <= set(LEVEL), f"modules in no layer: {sorted(groups - set(LEVEL))} (add them to LAYERS)"


def test_no_import_runs_up_the_layers():
    upward = []
    for module, target, line in imports():
        source, dest = group_of(module), _target_group(target)
        if module == "medm2g_core" and dest == "api":
            continue  # the package root hands out the API lazily (medm2g_core.__getattr__): the facade, not a use
        if LEVEL[dest] > LEVEL[source] or (source, dest) in FORBIDDEN:
            upward.append(f"{module}:{line} imports {target} ({source} -> {dest})")
    assert not upward, "imports against the layer contract (docs/ARCHITECTURE.md):\n" + "\n".join(upward)


def diagram() -> str:
    """The layer picture as a Mermaid block (GitHub renders it), highest layer on top."""
    lines = ["```mermaid", "flowchart TB"]
    for name, groups, what in reversed(LAYERS):
        shown = ", ".join(f"{g}/" if (REPO / "medm2g_core" / g).is_dir() else g for g in groups)
        lines.append(f'    {_node(name)}["<b>{name}</b><br/>{shown}<br/><i>{what}</i>"]')
    names = [_node(name) for name, _, _ in reversed(LAYERS)]
    lines += [f"    {upper} --> {lower}" for upper, lower in itertools.pairwise(names)]
    return "\n".join([*lines, "```"])


def _node(name: str) -> str:
    return name.split()[0]


def test_architecture_doc_shows_the_enforced_layers():
    doc = (REPO / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    assert diagram() in doc, "docs/ARCHITECTURE.md is out of date: paste `python tests/test_architecture.py`'s output"


def test_the_vocabulary_is_what_its_users_use():
    from medm2g_core import vocabulary
    from medm2g_core.data.adapters import ADAPTERS
    from medm2g_core.evaluation.tasks import RUNNERS
    from medm2g_core.models.sampler import SCHEDULERS
    from medm2g_core.training.cross_stage import ROUNDS

    assert tuple(SCHEDULERS) == vocabulary.SCHEDULER_NAMES
    assert tuple(ROUNDS) == vocabulary.CROSS_ROUNDS
    assert tuple(RUNNERS) == vocabulary.EVAL_TASKS
    assert set(vocabulary.CROSS_ROUNDS) <= set(vocabulary.PAIR_KINDS)
    assert set(vocabulary.MODALITY_OF_FILE.values()) == set(vocabulary.IMAGE_MODALITIES)
    assert sorted(k for keys in vocabulary.MODALITY_KEYS.values() for k in keys) == sorted(vocabulary.IMAGE_KEYS)
    assert ADAPTERS  # the CLI lists its adapter commands from the same table


if __name__ == "__main__":
    sys.stdout.write(diagram() + "\n")
