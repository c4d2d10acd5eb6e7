"""Graph primitives in JAX: sparse matrices as edge lists with segment_sum message passing
(:mod:`~jaxcl.graph.sparse`), LightGCN / power propagation (:mod:`~jaxcl.graph.propagation`),
kNN hypergraphs applied in factored form (:mod:`~jaxcl.graph.hypergraph`) and meta-path
adjacency products (:mod:`~jaxcl.graph.metapath`). Pure functions, jit-compatible; the
full-node contrast over all nodes is :func:`jaxcl.losses.contrib.grace_loss` (the one blockwise
kernel)."""
from jaxcl.graph.sparse import (Edges, bipartite, degrees, edges, from_dense, hstack, normalize,
                                pad, remove_self_loops, spmm, to_dense, transpose)
from jaxcl.graph.propagation import lightgcn, matmul, propagate
from jaxcl.graph.hypergraph import (Hypergraph, hyper_dense, hyper_matmul, hypergraph_adjacency,
                                    i2i_hypergraph, knn_incidence, knn_indices, u2u_hypergraph)
from jaxcl.graph.metapath import metapath_adjacency

__all__ = ["Edges", "edges", "from_dense", "to_dense", "transpose", "spmm", "degrees",
           "normalize", "pad", "remove_self_loops", "bipartite", "hstack", "matmul",
           "propagate", "lightgcn", "Hypergraph", "hypergraph_adjacency", "hyper_matmul",
           "hyper_dense", "knn_indices", "knn_incidence", "u2u_hypergraph", "i2i_hypergraph",
           "metapath_adjacency"]
