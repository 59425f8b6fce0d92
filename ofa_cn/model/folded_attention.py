"""Cross-attention with the key and value projections folded into the queries and the output.

A teacher-forced decoder pass has few queries (T, the target length) over many keys (S, the
image patches and source tokens). The plain order projects every key and value first
(2 S Dk D multiply-adds) for 2 T S D of attention itself. Per head h both projections are
linear, so

    q . (W_k[h] y_j + b_k[h]) = (W_k[h]^T q) . y_j + q . b_k[h]
    sum_j p_j (W_v[h] y_j + b_v[h]) = W_v[h] (sum_j p_j y_j) + (sum_j p_j) b_v[h]

(sum_j p_j is 1, except after attention dropout)

and attention can run in the input width Dk instead: each query is mapped into the keys' input
space (W_k[h]^T q, T H d Dk), scored against y itself and averages y itself (2 T H S Dk), and
only that average goes through W_v[h] (T H d Dk). With T much smaller than S, as in a
teacher-forced pass over an image, that is a fraction of the plain order's multiply-adds
(`folding_saves_work` decides per call): `ofa_cn_base` at 256 px (T 20, S 268, D = Dk 768,
H 12) needs 0.38 of them, and the share falls as the image grows.

The result is the same attention up to float rounding (sums in another order; max |difference|
~1e-7 on outputs of size ~0.2). `q . b_k[h]` is the same for every key, so it does not change
the softmax; it is kept so that b_k gets the gradient autograd gives it in the plain order
(zero up to rounding) instead of none.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def folding_saves_work(queries: int, keys: int, embed_dim: int, key_dim: int, num_heads: int) -> bool:
    """Whether the folded order needs fewer multiply-adds than projecting the keys and values.

    Args:
        queries: T. keys: S. embed_dim: D = H d (query and output width). key_dim: Dk, the
            width of the keys' input. num_heads: H.
    """
    plain = 2 * keys * key_dim * embed_dim + 2 * queries * keys * embed_dim  # K, V projections + QK^T, PV
    folded = 2 * queries * embed_dim * key_dim + 2 * num_heads * queries * keys * key_dim
    return folded < plain


def _batch_major(t: torch.Tensor, B: int, H: int, T: int) -> torch.Tensor:
    """[H, B T, X] (a head's rows together) -> [B, H T, X] (a batch row's together), a copy."""
    return t.view(H, B, T, -1).transpose(0, 1).reshape(B, H * T, -1)


def _head_major(t: torch.Tensor, B: int, H: int, T: int) -> torch.Tensor:
    """[B, H T, X] -> [H, B T, X], a copy."""
    return t.view(B, H, T, -1).transpose(0, 1).reshape(H, B * T, -1)


def folded_attention(q: torch.Tensor, y: torch.Tensor, k_weight: torch.Tensor, k_bias: torch.Tensor | None,
                     v_weight: torch.Tensor, v_bias: torch.Tensor | None, bias: torch.Tensor | None,
                     scale: float, dropout_p: float = 0.0) -> torch.Tensor:
    """softmax(q (W_k y + b_k)^T * scale + bias) (W_v y + b_v), without projecting y.

    Args:
        q: [B, H, T, d] projected queries (not yet scaled).
        y: [B, S, Dk] the keys' and values' input (the encoder output).
        k_weight, v_weight: [H d, Dk] the key and value projections; k_bias, v_bias: [H d] or None.
        bias: broadcastable to [B, H, T, S] (float, -inf on keys that must not be seen) or None.
        scale: multiplies the logits (before the bias).
        dropout_p: dropout on the attention probabilities (pass 0 outside training).
    Returns:
        [B, H, T, d] per-head outputs, as `eager_attention(q, k, v, bias, scale, dropout_p)` gives
        for k, v the projections of y.
    """
    B, H, T, d = q.shape
    S, Dk = y.shape[1], y.shape[2]
    qh = (q * scale).transpose(0, 1).reshape(H, B * T, d)  # [H, BT, d]
    qk = torch.bmm(qh, k_weight.view(H, d, Dk))  # [H, BT, Dk] queries in the keys' input space
    qk = _batch_major(qk, B, H, T)  # [B, HT, Dk]
    added = None  # what the scores get added: q . b_k (the same for every key of a row) and the bias
    if k_bias is not None:
        added = _batch_major(torch.bmm(qh, k_bias.view(H, d, 1)), B, H, T)  # [B, HT, 1]
    if bias is not None:
        bias = bias.expand(bias.size(0), H, T, S).reshape(-1, H * T, S)  # [B|1, HT, S]
        added = bias if added is None else bias + added
    scores = torch.bmm(qk, y.transpose(1, 2))  # [B, HT, S]
    if added is not None:
        scores = scores + added
    probs = torch.softmax(scores.float(), dim=-1).type_as(q)  # float32 softmax, as eager_attention
    if dropout_p > 0:
        probs = F.dropout(probs, p=dropout_p, training=True)
    mean_y = torch.bmm(probs, y)  # [B, HT, Dk] each row's attention-weighted input
    mean_y = _head_major(mean_y, B, H, T)  # [H, BT, Dk]
    v_t = v_weight.view(H, d, Dk).transpose(1, 2)  # [H, Dk, d]
    if v_bias is None:
        out = torch.bmm(mean_y, v_t)
    elif dropout_p > 0:  # dropped probabilities no longer sum to 1: b_v counts with each row's sum
        mass = _head_major(probs.sum(-1, keepdim=True), B, H, T)  # [H, BT, 1]
        out = torch.bmm(mean_y, v_t) + mass * v_bias.view(H, 1, d)
    else:
        out = torch.baddbmm(v_bias.view(H, 1, d), mean_y, v_t)  # [H, BT, d]
    return out.view(H, B, T, d).transpose(0, 1)  # [B, H, T, d]
