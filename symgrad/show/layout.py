"""Layered drawing of a DAG (Sugiyama style), iterative throughout.

Vertices ``0..n-1`` come in topological order (every edge goes from a lower to a higher
index). A vertex's layer is its longest path from a source, so all sources (the inputs)
stand in the first column, as on the slides. Edges that skip layers get dummy vertices,
one per skipped layer, so that they bend around nodes instead of crossing them. The order
within each layer is improved by barycentre sweeps (down and up, keeping the order with
the fewest crossings), and positions within a layer are the least-squares fit to the
neighbours' mean position under a minimum gap (pool-adjacent-violators), which keeps
chains straight.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Layout", "crossings", "layered"]


@dataclass(frozen=True)
class Layout:
    """Layer and position (in rows, at least 1 apart within a layer) of every vertex.

    Vertices ``n..`` are dummies; ``routes[k]`` is the chain of vertices edge ``k`` runs
    through, from its source to its target.
    """

    n: int
    layer: list[int]
    row: list[float]
    routes: list[list[int]]
    layers: list[list[int]]


def layered(
    n: int, edges: Sequence[tuple[int, int]], late: Sequence[int] = (), sweeps: int = 12
) -> Layout:
    """Lay out ``n`` vertices joined by ``edges`` ``(source, target)``, source < target.

    Sources listed in ``late`` stand just before their first consumer instead of in the
    first column (the stand-ins of a collapsed picture).
    """
    layer = [0] * n
    for u, v in sorted(edges, key=lambda e: e[1]):
        if not u < v:
            raise ValueError(f"edge {u} -> {v} is not in topological order")
        layer[v] = max(layer[v], layer[u] + 1)
    first_use: dict[int, int] = {}
    for u, v in edges:
        first_use[u] = min(first_use.get(u, layer[v]), layer[v])
    for u in late:
        layer[u] = max(first_use.get(u, 1) - 1, 0)
    preds: list[list[int]] = [[] for _ in range(n)]
    succs: list[list[int]] = [[] for _ in range(n)]
    routes = []
    for u, v in edges:
        route = [u]
        for level in range(layer[u] + 1, layer[v]):
            layer.append(level)
            preds.append([])
            succs.append([])
            route.append(len(layer) - 1)
        route.append(v)
        for a, b in zip(route, route[1:]):
            succs[a].append(b)
            preds[b].append(a)
        routes.append(route)

    layers: list[list[int]] = [[] for _ in range(max(layer, default=-1) + 1)]
    for v in _initial_order(n, routes, len(layer)):
        layers[layer[v]].append(v)
    layers = _order(layers, preds, succs, sweeps)
    row = _rows(layers, preds, succs, n)
    return Layout(n, layer, row, routes, layers)


def _initial_order(n: int, routes: list[list[int]], total: int) -> list[int]:
    """Real vertices by index; a dummy right after the source of its edge."""
    key: list[float] = [float(v) for v in range(total)]
    for route in routes:
        for k, d in enumerate(route[1:-1], 1):
            key[d] = route[0] + k / len(route)
    return sorted(range(total), key=key.__getitem__)


def _order(layers, preds, succs, sweeps):
    best = [list(lay) for lay in layers]
    best_count = _total_crossings(best, succs)
    for sweep in range(sweeps):
        down = sweep % 2 == 0
        span = range(1, len(layers)) if down else range(len(layers) - 2, -1, -1)
        for i in span:
            pos = {v: k for k, v in enumerate(layers[i - 1 if down else i + 1])}
            links = preds if down else succs
            layers[i] = _by_barycentre(layers[i], links, pos)
        count = _total_crossings(layers, succs)
        if count < best_count:
            best, best_count = [list(lay) for lay in layers], count
        if best_count == 0:
            break
    return best


def _by_barycentre(vertices: list[int], links, pos: dict[int, int]) -> list[int]:
    keys = {}
    for k, v in enumerate(vertices):
        near = [pos[u] for u in links[v] if u in pos]
        keys[v] = sum(near) / len(near) if near else k
    return sorted(vertices, key=keys.__getitem__)


def _total_crossings(layers, succs) -> int:
    total = 0
    for upper, lower in zip(layers, layers[1:]):
        pos = {v: k for k, v in enumerate(lower)}
        pairs = [(a, pos[b]) for a, u in enumerate(upper) for b in succs[u] if b in pos]
        total += crossings(pairs)
    return total


def crossings(pairs: list[tuple[int, int]]) -> int:
    """Crossings among straight edges between two rows, given as (upper, lower) positions.

    Counts inversions of the lower positions after sorting by upper (a Fenwick tree, so
    O(E log E) rather than comparing every pair of edges).
    """
    size = max((b for _, b in pairs), default=-1) + 1
    tree = [0] * (size + 1)
    count = seen = 0
    for _, b in sorted(pairs):
        i, below = b + 1, 0
        while i > 0:
            below += tree[i]
            i -= i & -i
        count += seen - below
        seen += 1
        i = b + 1
        while i <= size:
            tree[i] += 1
            i += i & -i
    return count


def _rows(layers, preds, succs, n: int, passes: int = 6) -> list[float]:
    row = [0.0] * len(preds)
    for lay in layers:
        for k, v in enumerate(lay):
            row[v] = float(k)
    for p in range(passes):
        down = p % 2 == 0
        span = range(1, len(layers)) if down else range(len(layers) - 2, -1, -1)
        for i in span:
            links = preds if down else succs
            lay = layers[i]
            wanted = [_mean([row[u] for u in links[v]], row[v]) for v in lay]
            weights = [1.0 if v < n else 0.5 for v in lay]
            for v, y in zip(lay, _pack(wanted, weights)):
                row[v] = y
    top = min(row, default=0.0)
    return [y - top for y in row]


def _mean(values: list[float], default: float) -> float:
    return sum(values) / len(values) if values else default


def _pack(wanted: list[float], weights: list[float], gap: float = 1.0) -> list[float]:
    """Closest positions (weighted least squares) in the given order, ``gap`` apart at least.

    With ``q_k = y_k - k*gap`` the constraint becomes ``q`` non-decreasing: an isotonic
    regression, solved by pooling adjacent violators.
    """
    blocks: list[list[float]] = []  # [mean, weight, count]
    for k, (y, w) in enumerate(zip(wanted, weights)):
        blocks.append([y - k * gap, w, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            m2, w2, c2 = blocks.pop()
            m1, w1, c1 = blocks.pop()
            blocks.append([(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2, c1 + c2])
    out = []
    for mean, _, count in blocks:
        out.extend([mean] * count)
    return [q + k * gap for k, q in enumerate(out)]
