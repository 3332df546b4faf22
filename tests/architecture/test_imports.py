"""The package's import graph: no cycles, TensorFlow only in the input pipeline and tools.

Every `import` of an avsf_jax module counts, at module level and inside functions alike
(a deferred import still couples the two modules), so a cycle anywhere fails here.
"""

import ast
import pathlib
import subprocess
import sys

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / 'avsf_jax'


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(PACKAGE.parent).with_suffix('').parts
  return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def _modules() -> dict[str, pathlib.Path]:
  return {_module_name(p): p for p in PACKAGE.rglob('*.py')}


def import_graph() -> dict[str, set[str]]:
  """{module: avsf_jax modules it imports}, resolving `from a import b` to `a.b` when `b` is
  a module and to `a` otherwise."""
  modules = _modules()
  graph: dict[str, set[str]] = {}
  for name, path in modules.items():
    edges = set()
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Import):
        targets = [alias.name for alias in node.names]
      elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        targets = [
          f'{node.module}.{alias.name}' if f'{node.module}.{alias.name}' in modules else node.module
          for alias in node.names
        ]
      else:
        continue
      edges.update(t for t in targets if t in modules and t != name)
    graph[name] = edges
  return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
  """One cycle of `graph` as a list of modules (first == last), or None."""
  state: dict[str, int] = {}  # 1: on the DFS stack, 2: done
  stack: list[str] = []

  def visit(node: str) -> list[str] | None:
    state[node] = 1
    stack.append(node)
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == 1:
        return stack[stack.index(nxt) :] + [nxt]
      if nxt not in state:
        found = visit(nxt)
        if found:
          return found
    stack.pop()
    state[node] = 2
    return None

  for node in sorted(graph):
    if node not in state:
      found = visit(node)
      if found:
        return found
  return None


def test_find_cycle_finds_a_planted_cycle():
  assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
  assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': set()}) is None


def test_the_package_has_no_import_cycle():
  graph = import_graph()
  assert len(graph) > 40  # the walk really saw the package
  cycle = find_cycle(graph)
  assert cycle is None, 'import cycle: ' + ' -> '.join(cycle)


def test_model_and_training_code_import_without_tensorflow():
  modules = [
    'avsf_jax.train',
    'avsf_jax.experiment',
    'avsf_jax.export',
    'avsf_jax.evaluate',
    'avsf_jax.models',
    'avsf_jax.tasks',
    'avsf_jax.input.fake',
  ]
  code = f'import sys, {", ".join(modules)}; print("tensorflow" in sys.modules)'
  proc = subprocess.run(
    [sys.executable, '-c', code], capture_output=True, text=True, timeout=120, check=True
  )
  assert proc.stdout.strip() == 'False'
