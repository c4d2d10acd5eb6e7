"""The slim core: `pip install jaxcl` (jax + numpy) is enough for jaxcl.losses, jaxcl.kernels,
jaxcl.collectives and jaxcl.metrics. Checked in a subprocess in which every package of the
`train` extra (and the dev / text ones) is unimportable, and against setup.py's requirements."""
import ast
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Import names of everything outside the core (setup.py TRAIN / DEV / TEXT extras).
BLOCKED = ("flax", "optax", "chex", "einops", "ml_collections", "orbax", "tensorflow_datasets",
           "tensorflow", "grain", "array_record", "mnist1d", "sklearn", "matplotlib", "tqdm",
           "absl", "tensorboardX", "psutil", "networkx", "ott", "safetensors", "tokenizers",
           "torch")

SCRIPT = f"""
import importlib.abc, sys
BLOCKED = {BLOCKED!r}
class Block(importlib.abc.MetaPathFinder):
  def find_spec(self, name, path=None, target=None):
    if name.split(".")[0] in BLOCKED:
      raise ImportError(f"{{name}} is not part of the core install")
sys.meta_path.insert(0, Block())
import jax, jax.numpy as jnp
import jaxcl, jaxcl.losses, jaxcl.kernels, jaxcl.collectives, jaxcl.metrics
a = jax.random.normal(jax.random.key(0), (8, 16))
b = a + 0.1 * jax.random.normal(jax.random.key(1), (8, 16))
value, grad = jax.value_and_grad(lambda a: jaxcl.losses.info_nce(a, b, temperature=0.1).mean())(a)
assert jnp.isfinite(value) and bool(jnp.isfinite(grad).all()) and float(jnp.abs(grad).sum()) > 0
for name in ("clip_loss", "nt_xent", "siglip_loss", "supcon"):
  assert callable(getattr(jaxcl.losses, name))
loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
try:
  import jaxcl.train
except ImportError as e:  # the trainer names its extra instead of failing deep inside
  assert "jaxcl.train needs the 'train' extra" in str(e) and "pip install 'jaxcl[train]'" in str(e), e
else:
  raise AssertionError("jaxcl.train imported without the train extra")
print("core ok", loaded)
"""


def test_core_modules_import_and_differentiate_without_the_train_stack():
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
  out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.strip() == "core ok []"


def _requirements():
  """install_requires and extras_require of setup.py, read from its AST (nothing is run)."""
  tree = ast.parse((ROOT / "setup.py").read_text())
  lists = {t.id: ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
           for t in n.targets if isinstance(t, ast.Name) and isinstance(n.value, ast.List)}
  call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup")
  kw = {k.arg: k.value for k in call.keywords}
  def resolve(node):
    if isinstance(node, ast.Name):
      return lists[node.id]
    if isinstance(node, ast.BinOp):
      return resolve(node.left) + resolve(node.right)
    return ast.literal_eval(node)
  extras = {ast.literal_eval(k): resolve(v) for k, v in zip(kw["extras_require"].keys,
                                                             kw["extras_require"].values)}
  return resolve(kw["install_requires"]), extras


def test_setup_core_requirements_are_only_jax_and_numpy():
  core, extras = _requirements()
  names = sorted(r.split(">")[0].split("=")[0].split("<")[0].strip() for r in core)
  assert names == ["jax", "numpy"], names
  train = " ".join(extras["train"])
  for pkg in ("flax", "optax", "orbax-checkpoint", "tensorflow-datasets", "grain", "matplotlib",
              "scikit-learn", "ml-collections"):
    assert pkg in train, pkg
