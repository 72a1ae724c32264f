"""Posterior samples and the batched predictive: S weight sets run on many rows within a memory budget.

`PosteriorSamples` holds S weight sets with the multi-target heads folded into a one-output last
layer (`collapse_draws`); `iter_predictive` runs them on many rows with batched matrix products
(one GEMM for the first layer, `torch.baddbmm` after) in cache-sized tiles, yielding blocks whose
size is set by a memory budget (`plan_chunks`), so S x N predictions never exist at once unless
they fit; `predictive_mean_std` reduces them per row.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mlflow_numerai.families.bayes_nn.spec import BNNSpec

FLOAT_BYTES = 4
DEFAULT_BUDGET_BYTES = 512 * 2**20
# One tile's activations: small enough to stay in this class of CPU's L2/L3 cache.
TILE_BYTES = 8 * 2**20
# A yielded block of float32 predictions plus the float64 copy and square its consumers make.
BLOCK_BYTES_PER_CELL = FLOAT_BYTES + 2 * 8


@dataclass
class PosteriorSamples:
    """S weight sets of an MLP with one output (the mean of `target`): weights[i] is (S, in, out),
    biases[i] is (S, out). Multi-target heads are already folded into the last layer."""

    weights: list[torch.Tensor]
    biases: list[torch.Tensor]

    @property
    def n_samples(self) -> int:
        return int(self.weights[0].shape[0])

    @property
    def widths(self) -> list[int]:
        return [int(self.weights[0].shape[1])] + [int(w.shape[2]) for w in self.weights]

    def slice(self, start: int, stop: int) -> PosteriorSamples:
        """Samples start..stop-1 (views)."""
        return PosteriorSamples([w[start:stop] for w in self.weights], [b[start:stop] for b in self.biases])

    def head(self, k: int) -> PosteriorSamples:
        """The first `k` samples."""
        return self.slice(0, k)

    def numpy(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Contiguous float32 numpy copies (what the predict closure stores)."""
        to_np = lambda t: np.ascontiguousarray(t.detach().cpu().numpy(), dtype=np.float32)  # noqa: E731
        return [to_np(w) for w in self.weights], [to_np(b) for b in self.biases]


def target_readout(draws: dict[str, torch.Tensor], spec: BNNSpec, n_samples: int) -> torch.Tensor:
    """(S, n_outputs) coefficients c with mean(target) = last-layer output @ c."""
    c = torch.zeros(n_samples, spec.n_outputs)
    c[:, 0] = 1.0
    if spec.target_model == "h4":
        c[:, 1] = draws["h4.beta"].reshape(n_samples)
    return c


def collapse_draws(draws: dict[str, torch.Tensor], spec: BNNSpec, *, y_offset: float = 0.0) -> PosteriorSamples:
    """Weight sets from guide draws (site -> (S, *shape)), with the heads folded into a last
    layer whose one output is the mean of `target` (plus the training mean `y_offset`)."""
    n_samples = int(draws["layer0.weight"].shape[0])
    weights = [draws[f"layer{i}.weight"].reshape(n_samples, *shape) for i, shape in enumerate(spec.layer_shapes)]
    biases = [draws[f"layer{i}.bias"].reshape(n_samples, shape[1]) for i, shape in enumerate(spec.layer_shapes)]
    c = target_readout(draws, spec, n_samples)
    weights[-1] = torch.einsum("sio,so->si", weights[-1], c).unsqueeze(-1)
    biases[-1] = (biases[-1] * c).sum(dim=1, keepdim=True) + y_offset
    return PosteriorSamples([w.detach().contiguous() for w in weights], [b.detach().contiguous() for b in biases])


def _forward_tile(x: torch.Tensor, samples: PosteriorSamples) -> torch.Tensor:
    """Predictions (n, S) of every weight set on rows `x` (n, F): the first layer is one GEMM
    against all S weight matrices side by side, the next ones batched (`baddbmm`)."""
    w0, b0 = samples.weights[0], samples.biases[0]
    s, n_in, width = w0.shape
    n = x.shape[0]
    h = torch.addmm(b0.reshape(1, s * width), x, w0.permute(1, 0, 2).reshape(n_in, s * width))
    if len(samples.weights) == 1:
        return h  # width is 1: (n, S)
    h = h.relu_().view(n, s, width).transpose(0, 1)  # (S, n, width), a view
    last = len(samples.weights) - 1
    for i in range(1, last + 1):
        h = torch.baddbmm(samples.biases[i].unsqueeze(1), h, samples.weights[i])
        if i < last:
            h.relu_()
    return h.squeeze(-1).T


def activation_bytes_per_cell(widths: Sequence[int]) -> int:
    """Bytes one (row, sample) pair costs inside `_forward_tile`: the hidden activations."""
    return FLOAT_BYTES * (sum(widths[1:]) + 1)


def tile_shape(n_rows: int, n_samples: int, widths: Sequence[int], tile_bytes: int = TILE_BYTES) -> tuple[int, int]:
    """(rows, samples) of one tile whose activations fit in `tile_bytes`: at most 1024 rows,
    as many samples as then fit."""
    cells = max(1, tile_bytes // activation_bytes_per_cell(widths))
    rows = max(1, min(n_rows, 1024, cells))
    return rows, max(1, min(n_samples, cells // rows))


def batched_forward(x: torch.Tensor, samples: PosteriorSamples, *, tile_bytes: int = TILE_BYTES) -> torch.Tensor:
    """Predictions (n, S) of every weight set on rows `x` (n, F), computed tile by tile so
    the activations of a tile stay in the CPU cache: one huge batched product streams them
    through memory and runs at a third of the matmul peak, cache-sized tiles at most of it
    (benchmarks/README.md)."""
    n, s = x.shape[0], samples.n_samples
    rows, k = tile_shape(n, s, samples.widths, tile_bytes)
    if rows >= n and k >= s:
        return _forward_tile(x, samples)
    out = torch.empty(n, s, dtype=x.dtype)
    for s0 in range(0, s, k):
        part = samples.slice(s0, s0 + k)
        for a in range(0, n, rows):
            out[a : a + rows, s0 : s0 + k] = _forward_tile(x[a : a + rows], part)
    return out


def plan_chunks(n_rows: int, n_samples: int, budget_bytes: int) -> tuple[int, int]:
    """(rows per block, samples per block) so one block of predictions, with the float64
    copies its consumers make, stays within `budget_bytes`; all samples at once when that
    leaves at least 1024 rows (or all rows) per block."""
    if budget_bytes <= 0:
        raise ValueError(f"memory budget must be positive, got {budget_bytes} bytes")
    cells = max(1, budget_bytes // BLOCK_BYTES_PER_CELL)
    min_rows = max(1, min(n_rows, 1024))
    sample_chunk = max(1, min(n_samples, cells // min_rows))
    row_chunk = max(1, min(n_rows, cells // sample_chunk))
    return row_chunk, sample_chunk


def _row_blocks(n_rows: int, row_chunk: int, bounds: Sequence[int] | None) -> list[tuple[int, int]]:
    """Row ranges of about `row_chunk` rows; with `bounds` (group starts, e.g. eras) every
    block holds whole groups (a group larger than `row_chunk` gets a block of its own)."""
    if bounds is None:
        return [(a, min(a + row_chunk, n_rows)) for a in range(0, n_rows, row_chunk)]
    edges = list(bounds) + [n_rows]
    blocks, start = [], edges[0]
    for a, b in zip(edges[:-1], edges[1:]):
        if b - start > row_chunk and a > start:
            blocks.append((start, a))
            start = a
    blocks.append((start, n_rows))
    return blocks


def iter_predictive(
    samples: PosteriorSamples,
    x: np.ndarray | torch.Tensor,
    *,
    budget_bytes: int = DEFAULT_BUDGET_BYTES,
    group_starts: Sequence[int] | None = None,
) -> Iterator[tuple[slice, slice, torch.Tensor]]:
    """Blocks (rows, samples, predictions[rows, samples]) covering all of x x samples, each
    within the memory budget. With `group_starts` a block never splits a group (an era)."""
    xt = torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32)) if isinstance(x, np.ndarray) else x
    n, s = xt.shape[0], samples.n_samples
    row_chunk, sample_chunk = plan_chunks(n, s, budget_bytes)
    if group_starts is not None:
        # whole groups per block: shrink the sample chunk if the largest block is wider
        blocks = _row_blocks(n, row_chunk, group_starts)
        widest = max(b - a for a, b in blocks)
        cells = max(1, budget_bytes // BLOCK_BYTES_PER_CELL)
        sample_chunk = max(1, min(sample_chunk, cells // widest))
    else:
        blocks = _row_blocks(n, row_chunk, None)
    with torch.no_grad():
        for s0 in range(0, s, sample_chunk):
            part = samples.slice(s0, s0 + sample_chunk)
            for a, b in blocks:
                yield slice(a, b), slice(s0, min(s0 + sample_chunk, s)), batched_forward(xt[a:b], part)


def predictive_mean_std(
    samples: PosteriorSamples, x: np.ndarray | torch.Tensor, *, budget_bytes: int = DEFAULT_BUDGET_BYTES
) -> tuple[np.ndarray, np.ndarray]:
    """Per-row mean and standard deviation (ddof 0) of the S sample predictions."""
    n = len(x)
    total = torch.zeros(n, dtype=torch.float64)
    total_sq = torch.zeros(n, dtype=torch.float64)
    for rows, _, pred in iter_predictive(samples, x, budget_bytes=budget_bytes):
        p = pred.double()
        total[rows] += p.sum(dim=1)
        total_sq[rows] += (p * p).sum(dim=1)
    mean = total / samples.n_samples
    var = (total_sq / samples.n_samples - mean * mean).clamp_min(0.0)
    return mean.numpy(), var.sqrt().numpy()

