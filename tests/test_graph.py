"""Graph primitives (jaxcl.graph): segment_sum message passing, normalisations, LightGCN, kNN
hypergraphs in factored form, meta-path products; against dense NumPy and networkx."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcl import graph

RNG = np.random.default_rng(0)


def _random_edges(n, m, e, seed=0):
  r = np.random.default_rng(seed)
  rows, cols = r.integers(n, size=e), r.integers(m, size=e)
  w = r.uniform(0.5, 2.0, size=e).astype(np.float32)
  dense = np.zeros((n, m))
  np.add.at(dense, (rows, cols), w)                       # duplicates add up
  return graph.edges(rows.astype(np.int32), cols.astype(np.int32), (n, m), w), dense


def test_spmm_degrees_transpose_and_gradients_match_dense():
  e, a = _random_edges(7, 5, 20)
  x = RNG.normal(size=(5, 3)).astype(np.float32)
  out, dense, deg_r, deg_c, t = jax.jit(lambda e, x: (
      graph.spmm(e, x), graph.to_dense(e), graph.degrees(e, 1), graph.degrees(e, 0),
      graph.spmm(graph.transpose(e), jnp.ones((7,)))))(e, x)
  np.testing.assert_allclose(out, a @ x, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(dense, a, rtol=1e-6)
  np.testing.assert_allclose(deg_r, a.sum(1), rtol=1e-5)
  np.testing.assert_allclose(deg_c, a.sum(0), rtol=1e-5)
  np.testing.assert_allclose(t, a.T @ np.ones(7), rtol=1e-5)
  g = np.asarray(jax.grad(lambda x: jnp.sum(jnp.sin(graph.spmm(e, x))))(x))
  np.testing.assert_allclose(g, a.T @ np.cos(a @ x), rtol=1e-4, atol=1e-5)
  padded = graph.pad(e, 64)
  assert padded.rows.shape == (64,)
  np.testing.assert_allclose(graph.spmm(padded, x), out, rtol=1e-6)


@pytest.mark.parametrize("mode", ["sym", "row"])
def test_normalize_matches_numpy_and_isolated_nodes_stay_zero(mode):
  e, a = _random_edges(6, 6, 14, seed=1)
  a[3], a[:, 3] = 0, 0                                    # node 3 isolated
  keep = (np.asarray(e.rows) != 3) & (np.asarray(e.cols) != 3)
  e = graph.edges(np.asarray(e.rows)[keep], np.asarray(e.cols)[keep], (6, 6),
                  np.asarray(e.weights)[keep])
  d_r, d_c = a.sum(1), a.sum(0)
  inv = lambda d, p: np.where(d > 0, np.where(d > 0, d, 1) ** -p, 0)
  want = (inv(d_r, .5)[:, None] * a * inv(d_c, .5)[None] if mode == "sym" else
          inv(d_r, 1.)[:, None] * a)
  got = np.asarray(jax.jit(lambda e: graph.to_dense(graph.normalize(e, mode)))(e))
  assert np.all(np.isfinite(got))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_sym_normalisation_is_networkx_normalized_laplacian():
  nx = pytest.importorskip("networkx")
  g = nx.karate_club_graph()
  a = nx.to_numpy_array(g, weight=None)
  lap = nx.normalized_laplacian_matrix(g, weight=None).toarray()
  got = np.asarray(graph.to_dense(graph.normalize(graph.from_dense(a), "sym")))
  np.testing.assert_allclose(np.eye(len(a)) - got, lap, atol=1e-6)


def test_bipartite_lightgcn_and_propagate_match_dense_loops():
  nu, ni = 5, 4
  users = np.array([0, 0, 1, 2, 3, 3, 4], np.int32)
  items = np.array([0, 1, 1, 2, 3, 0, 2], np.int32)
  a = np.zeros((nu + ni, nu + ni))
  for u, i in zip(users, items):
    a[u, nu + i] = a[nu + i, u] = 1.0
  d = a.sum(1)
  a_hat = a / np.sqrt(np.outer(d, d))
  x = RNG.normal(size=(nu + ni, 3)).astype(np.float32)
  e = graph.normalize(graph.bipartite(users, items, nu, ni), "sym")
  np.testing.assert_allclose(graph.to_dense(e), a_hat, rtol=1e-5, atol=1e-7)
  layers, h = [x.astype(np.float64)], x.astype(np.float64)
  for _ in range(3):
    h = a_hat @ h
    layers.append(h)
  np.testing.assert_allclose(graph.lightgcn(e, x, num_layers=3), np.mean(layers, 0),
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(graph.propagate(e, x, num_layers=3), layers[-1], rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_allclose(graph.lightgcn(e, x, num_layers=0), x)
  np.testing.assert_allclose(graph.propagate(a_hat.astype(np.float32), x, num_layers=2),
                             layers[2], rtol=1e-5, atol=1e-6)   # a dense operator too


def _cos_topk(f, k):
  u = f / np.linalg.norm(f, axis=1, keepdims=True)
  return np.argsort(-(u @ u.T), axis=1, kind="stable")[:, :k]


def test_knn_indices_match_numpy_through_chunks():
  f = RNG.normal(size=(37, 6)).astype(np.float32)
  got = np.asarray(graph.knn_indices(f, 4, chunk=8))   # 37 rows: 5 chunks, the last padded
  np.testing.assert_array_equal(got, _cos_topk(f, 4))
  assert np.all(got[:, 0] == np.arange(37))            # the node itself first
  inc = np.asarray(graph.to_dense(graph.knn_incidence(f, 4, chunk=8)))
  assert np.all(inc.sum(1) == 4) and np.all(np.diag(inc) == 1)


def _dense_hyper(h, norm, drop_self):
  a = h @ h.T
  if drop_self:
    a = a - np.diag(np.diag(a))
  d = a.sum(1)
  inv = lambda p: np.where(d > 0, np.where(d > 0, d, 1) ** -p, 0)
  return inv(.5)[:, None] * a * inv(.5)[None] if norm == "sym" else inv(1.)[:, None] * a


@pytest.mark.parametrize("norm,drop_self", [("sym", False), ("row", True), ("sym", True)])
def test_hypergraph_operator_equals_dense_h_ht(norm, drop_self):
  e, h = _random_edges(9, 6, 18, seed=2)
  with pytest.raises(ValueError, match="'incidence' has duplicate"):
    graph.hypergraph_adjacency(e, norm=norm, drop_self=drop_self)
  e = graph.from_dense(h)                          # duplicates summed
  g = graph.hypergraph_adjacency(graph.pad(e, 32), norm=norm, drop_self=drop_self)
  want = _dense_hyper(h, norm, drop_self)
  x = RNG.normal(size=(9, 4)).astype(np.float32)
  got, prod = jax.jit(lambda g, x: (graph.hyper_dense(g), graph.propagate(g, x, num_layers=2)))(
      g, x)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(prod, want @ want @ x, rtol=1e-4, atol=1e-5)


def test_i2i_and_u2u_hypergraphs_match_the_reference_construction():
  nx = pytest.importorskip("networkx")
  f1 = RNG.normal(size=(12, 8)).astype(np.float32)
  f2 = RNG.normal(size=(12, 5)).astype(np.float32)
  h = np.zeros((12, 24))
  for m, f in enumerate((f1, f2)):                     # binarised top-3 per row, stacked
    for i, row in enumerate(_cos_topk(f, 3)):
      h[i, m * 12 + row] = 1.0
  np.testing.assert_allclose(graph.hyper_dense(graph.i2i_hypergraph([f1, f2], 3)),
                             _dense_hyper(h, "sym", False), rtol=1e-5, atol=1e-6)
  # u2u: R R^T minus the diagonal = networkx's weighted projection (shared items), row-normed.
  users = np.array([0, 0, 1, 1, 2, 3, 3, 3, 4], np.int32)
  items = np.array([0, 1, 1, 2, 2, 0, 1, 3, 5], np.int32)   # user 4 shares nothing
  b = nx.Graph()
  b.add_nodes_from(range(5), bipartite=0)
  b.add_nodes_from(range(100, 106), bipartite=1)
  b.add_edges_from((int(u), 100 + int(i)) for u, i in zip(users, items))
  proj = nx.bipartite.weighted_projected_graph(b, range(5), ratio=False)
  a = nx.to_numpy_array(proj, nodelist=range(5), weight="weight")
  want = np.where(a.sum(1, keepdims=True) > 0, a / np.maximum(a.sum(1, keepdims=True), 1), 0)
  got = np.asarray(graph.hyper_dense(graph.u2u_hypergraph(users, items, 5, 6)))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
  assert np.all(got[4] == 0)


def test_metapath_adjacency_matches_numpy_and_networkx():
  nx = pytest.importorskip("networkx")
  ap = (RNG.random((6, 8)) < 0.3).astype(np.float32)     # authors x papers
  pv = np.eye(3, dtype=np.float32)[RNG.integers(3, size=8)]   # papers x venues
  np.testing.assert_allclose(graph.metapath_adjacency([ap, ap.T]), ap @ ap.T, rtol=1e-6)
  apvpa = ap @ pv @ pv.T @ ap.T
  np.testing.assert_allclose(graph.metapath_adjacency([ap, pv, pv.T, ap.T]), apvpa, rtol=1e-6)
  c = (apvpa > 0) * (1 - np.eye(6))
  d = c.sum(1)
  want = np.where(d[:, None] > 0, c / np.maximum(d[:, None], 1), 0)
  np.testing.assert_allclose(graph.metapath_adjacency(
      [ap, pv, pv.T, ap.T], binarize=True, drop_self=True, normalize="row"), want, atol=1e-6)
  b = nx.Graph()
  b.add_edges_from((f"a{i}", f"p{j}") for i, j in zip(*np.nonzero(ap)))
  b.add_nodes_from(f"a{i}" for i in range(6))
  proj = nx.bipartite.weighted_projected_graph(b, [f"a{i}" for i in range(6)])
  a = nx.to_numpy_array(proj, nodelist=[f"a{i}" for i in range(6)], weight="weight")
  off = np.asarray(graph.metapath_adjacency([ap, ap.T], drop_self=True))
  np.testing.assert_allclose(off, a, atol=1e-6)          # co-authored paper counts


def test_errors_name_the_argument():
  with pytest.raises(ValueError, match="'rows' must lie in"):
    graph.edges(np.array([0, 5]), np.array([0, 1]), (3, 3))
  with pytest.raises(ValueError, match="'cols' must be a rank-1 integer"):
    graph.edges(np.array([0, 1]), np.array([0.0, 1.0]), (3, 3))
  e, _ = _random_edges(4, 3, 5)
  with pytest.raises(ValueError, match="'x' must have 3 rows"):
    graph.spmm(e, np.ones((4, 2), np.float32))
  with pytest.raises(TypeError, match="'x' must be a floating-point"):
    graph.spmm(e, np.ones((3, 2), np.int32))
  with pytest.raises(ValueError, match="'mode' must be"):
    graph.normalize(e, "left")
  with pytest.raises(ValueError, match="'k' must be an int in"):
    graph.knn_indices(np.ones((4, 2), np.float32), 5)
  with pytest.raises(ValueError, match="'num_layers' must be an int"):
    graph.lightgcn(e, np.ones((3, 2), np.float32), num_layers=-1)
  with pytest.raises(ValueError, match=r"'adjs\[0\]' \(6, 8\) and 'adjs\[1\]'"):
    graph.metapath_adjacency([np.ones((6, 8), np.float32), np.ones((6, 8), np.float32)])
  with pytest.raises(ValueError, match="same item count"):
    graph.i2i_hypergraph([np.ones((4, 2), np.float32), np.ones((5, 2), np.float32)], 2)
  with pytest.raises(ValueError, match="'norm' must be"):
    graph.hypergraph_adjacency(e, norm="col")
