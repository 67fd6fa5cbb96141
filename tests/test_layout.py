"""The shape of the codebase: every module says its one job, stays small, and imports only downwards
(scripts -> engine -> parts -> primitives)."""
import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Every module of the package, by layer. A module may import modules of its own layer or lower ones, never higher.
LAYERS = {
    "primitives": ["files", "metrics", "batchnorm", "xla_flags", "flops", "grid", "trees", "data.dataset_info",
                   "pretrained", "mixing"],
    "parts": ["blocks", "models", "optim", "parallel", "distributed", "checkpoint", "finetune", "weights",
              "workdir_lock", "reporting", "plots", "results", "config", "startup", "targets", "data",
              "data.policies", "data.augment",
              "data.preprocess", "data.shapes", "data.synthetic", "data.tfrecords", "data.folder", "data.datasets",
              "data.pipeline"],
    "engine": ["train", "sweep", "lesion", "predict", "bench", "bench.workload", "bench.peers", "bench.run",
               "bench.input", "bench.profile", "search", "study", "aot", "evaluation"],
}
MAX_LINES = 500  # A library module longer than this does more than one job.
MAX_SCRIPT_LINES = 100  # Scripts parse flags and call the library.


def _modules():
  found = []
  for directory, _, names in os.walk(os.path.join(ROOT, "resnet_jax")):
    for name in names:
      if name.endswith(".py"):
        path = os.path.relpath(os.path.join(directory, name), os.path.join(ROOT, "resnet_jax"))
        module = path[:-3].replace(os.sep, ".")
        found.append(module.removesuffix(".__init__") if module != "__init__" else "")
  return sorted(m for m in found if m)


def _path(module):
  base = os.path.join(ROOT, "resnet_jax", *module.split("."))
  return os.path.join(base, "__init__.py") if os.path.isdir(base) else base + ".py"


def _imports(module):
  """The resnet_jax modules `module` imports (at any depth of its code), and whether it imports experiments."""
  with open(_path(module)) as f:
    tree = ast.parse(f.read())
  package = module if os.path.isdir(os.path.join(ROOT, "resnet_jax", *module.split("."))) else module.rpartition(".")[0]
  known = set(_modules())
  out = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      if node.level:  # relative
        base = ".".join(["resnet_jax", *filter(None, package.split("."))][:len(package.split(".")) + 2 - node.level])
        names = [f"{base}.{node.module}" if node.module else base]
      else:
        # `from resnet_jax.data import folder` imports the submodule; the package counts only where a name taken
        # from it is not a submodule (`from resnet_jax.data import DatasetInfo`).
        names = [f"{node.module}.{a.name}" for a in node.names]
        if not all(n.removeprefix("resnet_jax.") in known for n in names):
          names.append(node.module)
    else:
      continue
    out.update(names)
  return {n.removeprefix("resnet_jax.") for n in out if n.startswith("resnet_jax.")
          and n.removeprefix("resnet_jax.") in known}, {n for n in out if n.split(".")[0] == "experiments"}


def _layer(module):
  for index, (_, members) in enumerate(LAYERS.items()):
    if module in members:
      return index
  raise AssertionError(f"resnet_jax.{module} is in no layer: add it to tests/test_layout.py's LAYERS")


def test_every_module_has_a_layer():
  for module in _modules():
    _layer(module)


@pytest.mark.parametrize("module", _modules())
def test_imports_point_downwards(module):
  imported, scripts = _imports(module)
  assert not scripts, f"resnet_jax.{module} imports the scripts {sorted(scripts)}"
  upward = sorted(m for m in imported if _layer(m) > _layer(module))
  assert not upward, f"resnet_jax.{module} ({list(LAYERS)[_layer(module)]}) imports higher layers: {upward}"


def _cycle():
  """An import cycle among the package's modules (imports at any depth of their code), or None."""
  graph = {module: _imports(module)[0] - {module} for module in _modules()}
  state = {}  # module -> 1 on the current path, 2 done

  def visit(module, path):
    state[module] = 1
    for child in sorted(graph[module]):
      if state.get(child) == 1:
        return path[path.index(child):] + [child]
      if child not in state and (found := visit(child, path + [child])):
        return found
    state[module] = 2
    return None

  for module in graph:
    if module not in state and (found := visit(module, [module])):
      return found
  return None


def test_no_import_cycles():
  cycle = _cycle()
  assert cycle is None, "import cycle: " + " -> ".join(f"resnet_jax.{m}" for m in cycle)


def test_models_stand_alone():
  imported, _ = _imports("models")
  assert imported <= {"batchnorm", "blocks"}
  assert _imports("blocks")[0] == set()


@pytest.mark.parametrize("module", _modules())
def test_each_module_says_its_job_and_stays_small(module):
  with open(_path(module)) as f:
    text = f.read()
  assert ast.get_docstring(ast.parse(text)), f"resnet_jax.{module} has no module docstring"
  assert text.count("\n") <= MAX_LINES, f"resnet_jax.{module} has {text.count(chr(10))} lines"


@pytest.mark.parametrize("script", sorted(f for f in os.listdir(os.path.join(ROOT, "experiments"))
                                          if f.endswith(".py") and f != "__init__.py"))
def test_scripts_are_thin(script):
  with open(os.path.join(ROOT, "experiments", script)) as f:
    text = f.read()
  assert ast.get_docstring(ast.parse(text)), script
  assert text.count("\n") <= MAX_SCRIPT_LINES, f"experiments/{script} has {text.count(chr(10))} lines"


def test_nothing_points_outside_the_repository():
  offenders = []
  for directory, _, names in os.walk(ROOT):
    if any(part.startswith(".") or part in ("runs", "__pycache__") for part in directory.split(os.sep)):
      continue
    for name in names:
      if name.endswith((".py", ".md", ".toml", ".txt", ".sh", ".sbatch")):
        with open(os.path.join(directory, name), errors="replace") as f:
          if ".." + "/shared" in f.read():  # (spelled so that this file does not match itself)
            offenders.append(os.path.relpath(os.path.join(directory, name), ROOT))
  assert not offenders, offenders
