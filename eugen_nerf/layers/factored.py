"""Activations kept in feature space, and linear maps applied to concatenated inputs without copying.

A chain of EUGen layers never needs its hidden vectors: an EUGen layer's output is `y = f @ A.T + c`
with a narrow feature matrix `f` (N x F, F = k*m), and whatever consumes `y` linearly can fold `A` into
its own weights (docs/eugen-math.md §4, "bundling"). `Factored` is that `(f, A, c)` triple.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Factored:
    """The activations `features @ weight.T + bias` of a batch, without forming them."""

    features: Tensor  # (N, F)
    weight: Tensor  # (width, F)
    bias: Tensor | None  # (width,)

    @property
    def width(self) -> int:
        return self.weight.shape[0]

    def dense(self) -> Tensor:
        """Form the (N, width) activations."""
        # A contiguous (F, width) right operand: MKL is about 2x faster than with a transposed view
        # at this small inner dimension, and the copy is only F x width.
        weight_t = self.weight.t().contiguous()
        if self.bias is None:
            return self.features @ weight_t
        return torch.addmm(self.bias, self.features, weight_t)

    def linear(self, weight: Tensor, bias: Tensor | None) -> Factored:
        """`y @ weight.T + bias` as another factored batch: costs width*F*out, independent of N."""
        folded_bias = None if self.bias is None else weight @ self.bias
        if bias is not None:
            folded_bias = bias if folded_bias is None else folded_bias + bias
        return Factored(self.features, weight @ self.weight, folded_bias)

    def norm(self) -> Tensor:
        """Row norms ||y|| from the quadratic form f (A^T A) f^T + 2 f A^T c + ||c||^2 (no N x width tensor)."""
        gram = self.weight.t() @ self.weight  # (F, F)
        if self.bias is None:
            squared = ((self.features @ gram) * self.features).sum(dim=1)
        else:
            cross = 2.0 * (self.weight.t() @ self.bias)  # (F,)
            squared = (torch.addmm(cross, self.features, gram) * self.features).sum(dim=1)
            squared = squared + self.bias @ self.bias
        # Cancellation can leave tiny negative values where y is near zero.
        return squared.clamp_min(0.0).sqrt()


Piece = Tensor | Factored


def piece_width(piece: Piece) -> int:
    return piece.width if isinstance(piece, Factored) else piece.shape[-1]


def factored_width(piece: Piece) -> int:
    """Columns a reader of the piece multiplies per row: F for a factored piece, else its width."""
    return piece.features.shape[1] if isinstance(piece, Factored) else piece.shape[1]


def factored_linear(weight: Tensor, bias: Tensor | None, piece: Piece) -> Factored:
    """`piece @ weight.T + bias` kept factored (no N x out tensor is formed)."""
    if isinstance(piece, Factored):
        return piece.linear(weight, bias)
    return Factored(piece, weight, bias)


def linear_on_pieces(weight: Tensor, bias: Tensor | None, pieces: list[Piece]) -> Tensor:
    """`concat(pieces) @ weight.T + bias` without the concatenation, folding factored pieces.

    `weight` may be a column slice of a larger matrix (BLAS takes the leading stride as it is).
    """
    terms: list[tuple[Tensor, Tensor]] = []
    column = 0
    for piece in pieces:
        width = piece_width(piece)
        block = weight[:, column : column + width]
        column += width
        if isinstance(piece, Factored):
            terms.append((piece.features, block @ piece.weight))
            if piece.bias is not None:
                shift = block @ piece.bias
                bias = shift if bias is None else bias + shift
        else:
            terms.append((piece, block))
    if column != weight.shape[1]:
        raise ValueError(f"inputs have total width {column}, expected {weight.shape[1]}")
    lhs, rhs = terms[0]
    out = lhs @ rhs.t() if bias is None else torch.addmm(bias, lhs, rhs.t())
    in_place = not torch.is_grad_enabled()
    for lhs, rhs in terms[1:]:
        out = out.addmm_(lhs, rhs.t()) if in_place else out.addmm(lhs, rhs.t())
    return out


def piece_norms(pieces: list[Piece]) -> Tensor:
    """Row norms of concat(pieces), from each piece's norm."""
    norms = [
        piece.norm() if isinstance(piece, Factored) else torch.linalg.vector_norm(piece, dim=-1) for piece in pieces
    ]
    if len(norms) == 1:
        return norms[0]
    return torch.stack(norms, dim=0).square().sum(dim=0).sqrt()
