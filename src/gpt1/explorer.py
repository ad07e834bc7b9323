"""The attention explorer: one self-contained HTML page that shows what a gpt1 model attends to on a text,
and how it decides, with the model's own numbers.

`attention_html(model, tokenizer, text)` runs the text through the model once, records every layer's
attention weights and the query, key and value vectors each head computed, and writes them into the page
(compressed, with the page's script and styles inlined: it opens from disk, with no network). The page
(explorer_assets/) draws on canvases, so it stays responsive at 512 tokens, and has five views:

- model view: the layers × heads grid of attention maps, the causal triangle masked;
- head view: click or hover a token to see what it attends to, or what attends to it, in the chosen heads;
- step by step: softmax(q·kᵀ/√d)·v for one query token and one head, recomputed in the browser from the
  model's query, key and value vectors and checked against the model's own weights;
- head summaries: entropy, previous-token, first-token (sink) and induction scores, sortable;
- classify: for a GPT-1 task-format input, what the `<|classify|>` token reads in each layer.

With `compare=`, a second model (for example the fine-tuned one) is recorded on the same tokens, and
every view can show either model or their difference.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
import zlib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .tokenization import TASK_TOKENS

# Attention weights are stored as 16-bit fractions of 1 (at most 7.7e-6 off): the page reads them back
# exactly enough to show four decimals, at half the size of float32.
WEIGHT_SCALE = 65535
# Query, key and value vectors go in as float32 while they take at most this many bytes, as float16 beyond
# (a paper-sized model at 512 tokens has 14M of them); the page says which.
FLOAT32_VECTOR_BYTES = 16 << 20
ASSETS = "explorer_assets"


@dataclass
class AttentionRecord:
    """One model's attention on one text: `weights[layer, head, query, key]` (rows sum to 1, zero right of
    the diagonal), and per layer the `queries`, `keys` and `values` of every token, `[layer, token, n_embd]`
    (head h owns columns h·head_dim to (h+1)·head_dim), as the attention layer computed them."""

    name: str
    weights: torch.Tensor
    queries: torch.Tensor
    keys: torch.Tensor
    values: torch.Tensor
    head_dim: int
    scaling: float = field(init=False)

    def __post_init__(self) -> None:
        self.scaling = self.head_dim**-0.5

    @property
    def num_layers(self) -> int:
        return int(self.weights.shape[0])

    @property
    def num_heads(self) -> int:
        return int(self.weights.shape[1])

    def head_outputs(self) -> torch.Tensor:
        """`[layer, token, n_embd]`: each head's weighted sum of values (what goes into the output projection)."""
        values = self.values.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)  # [L, H, T, d]
        return (self.weights @ values).transpose(1, 2).flatten(2)


def record_attention(model: PreTrainedModel, input_ids: torch.Tensor, name: str = "model") -> AttentionRecord:
    """Run `input_ids` (`[1, tokens]`) through a gpt1 model and record its attention (see `AttentionRecord`).

    Only eager attention materialises the weights, so a model loaded with SDPA (the default) is switched to
    eager for this one forward and switched back afterwards. Works on the base model of any gpt1 head.
    """
    config = model.config
    if getattr(config, "model_type", None) != "gpt1":
        raise ValueError(f"The attention explorer reads gpt1 models; {name!r} is a {config.model_type!r} model.")
    if input_ids.shape[1] > config.n_positions:
        raise ValueError(
            f"The text has {input_ids.shape[1]} tokens, more than the context of {name!r} ({config.n_positions} "
            "tokens): shorten it."
        )
    base_model: Any = model.base_model
    projections: list[torch.Tensor] = []
    hooks = [
        block.attn.qkv_proj.register_forward_hook(lambda _module, _inputs, output: projections.append(output))
        for block in base_model.blocks
    ]
    previous = config._attn_implementation
    try:
        if previous != "eager":
            base_model.set_attn_implementation("eager")
        with torch.no_grad():
            outputs = base_model(input_ids=input_ids.to(base_model.device), output_attentions=True, use_cache=False)
    finally:
        for hook in hooks:
            hook.remove()
        if previous != "eager":
            base_model.set_attn_implementation(previous)
    weights = torch.stack([layer[0] for layer in outputs.attentions]).float().cpu()  # [L, H, T, T]
    queries, keys, values = torch.stack([p[0] for p in projections]).float().cpu().chunk(3, dim=-1)  # [L, T, E] each
    if not (torch.isfinite(weights).all() and torch.isfinite(values).all()):
        # Finite weights can still overflow (a flipped exponent bit in a weights file makes one 1e36).
        raise ValueError(
            f"{name!r} gives attention that is not numbers (NaN or infinite) on this text: its weights are "
            "damaged or training diverged. Save or download it again."
        )
    return AttentionRecord(name, weights, queries, keys, values, head_dim=config.n_embd // config.n_head)


def head_summaries(weights: torch.Tensor, token_ids: list[int]) -> dict[str, list[list[float | None]]]:
    """Per-head scores that researchers use to tell heads apart, each `[layer][head]`, over query tokens 1 on
    (token 0 can only attend to itself):

    - entropy: the mean entropy of a query's attention, in bits (0: one key; high: spread out);
    - previous: the mean weight on the token just before the query;
    - first: the mean weight on the first token (an "attention sink" parks weight there);
    - induction: for queries whose token occurred before, the mean weight on the tokens that followed its
      earlier occurrences (… A B … A → B); None where the text repeats no token.
    """
    tokens = len(token_ids)
    layers, heads = weights.shape[:2]
    if tokens < 2:
        empty: list[list[float | None]] = [[None] * heads for _ in range(layers)]
        return {"entropy": empty, "previous": empty, "first": empty, "induction": empty}
    rows = weights[:, :, 1:, :]  # [L, H, T-1, T]
    entropy = -(rows * torch.log2(rows.clamp_min(1e-12))).sum(-1).mean(-1)
    previous = torch.diagonal(weights, offset=-1, dim1=-2, dim2=-1).mean(-1)
    first = rows[..., 0].mean(-1)
    # induction[query, key] = 1 where key follows an earlier occurrence of the query's token.
    follows_earlier = torch.zeros(tokens, tokens)
    for query in range(tokens):
        for earlier in range(query - 1):
            if token_ids[earlier] == token_ids[query]:
                follows_earlier[query, earlier + 1] = 1.0
    induction_queries = follows_earlier.sum(-1) > 0
    induction: torch.Tensor | None = None
    if bool(induction_queries.any()):
        induction = (weights * follows_earlier).sum(-1)[..., induction_queries].mean(-1)

    def table(scores: torch.Tensor | None) -> list[list[float | None]]:
        if scores is None:
            return [[None] * heads for _ in range(layers)]
        return [[round(float(value), 6) for value in layer] for layer in scores]

    return {
        "entropy": table(entropy),
        "previous": table(previous),
        "first": table(first),
        "induction": table(induction),
    }


def _packed(array: np.ndarray) -> str:
    """The bytes of an array, zlib-compressed and base64-encoded: the page inflates them with the browser's
    own DecompressionStream. (Little-endian dtypes: what typed arrays read on every browser's platform.)"""
    return base64.b64encode(zlib.compress(np.ascontiguousarray(array).tobytes(), level=6)).decode("ascii")


def _lower_triangles(weights: torch.Tensor) -> np.ndarray:
    """Each head's weights on and below the diagonal, row by row (row i holds keys 0..i), as uint16 fractions."""
    tokens = weights.shape[-1]
    rows, columns = torch.tril_indices(tokens, tokens)
    quantised = torch.round(weights[..., rows, columns] * WEIGHT_SCALE).clamp(0, WEIGHT_SCALE)
    return quantised.numpy().astype("<u2")


def _model_payload(record: AttentionRecord, token_ids: list[int]) -> dict[str, Any]:
    vectors = torch.stack([record.queries, record.keys, record.values], dim=1).numpy()  # [L, 3, T, E]
    full_precision = vectors.size * 4 <= FLOAT32_VECTOR_BYTES
    return {
        "name": record.name,
        "layers": record.num_layers,
        "heads": record.num_heads,
        "headDim": record.head_dim,
        "scaling": record.scaling,
        "weights": _packed(_lower_triangles(record.weights)),
        "weightScale": WEIGHT_SCALE,
        "vectors": _packed(vectors.astype("<f4" if full_precision else "<f2")),
        "vectorType": "float32" if full_precision else "float16",
        "summaries": head_summaries(record.weights, token_ids),
    }


def _token_kinds(tokenizer: PreTrainedTokenizerBase, token_ids: list[int]) -> tuple[list[str], list[int]]:
    """Each token's GPT-1 role (start, delimiter, classify, special or text) and segment: 0 before the first
    delimiter, 1 after it, and so on (the parts of a task-format input)."""
    task_ids = {tokenizer.convert_tokens_to_ids(token): role for role, token in TASK_TOKENS.items()}
    task_ids.pop(tokenizer.unk_token_id, None)  # a tokenizer without task tokens maps them to its unknown token
    special_ids = set(tokenizer.all_special_ids)
    kinds, segments, segment = [], [], 0
    for token_id in token_ids:
        role = task_ids.get(token_id)
        kinds.append(role.removesuffix("_token") if role else ("special" if token_id in special_ids else "text"))
        if role == "delimiter_token":
            segment += 1
        segments.append(segment)
    return kinds, segments


def readable_token(piece: str) -> str:
    """A token as shown: a line break as ⏎, nothing as ∅ (spaces stay spaces; the page shows them as ·)."""
    return piece.replace("\n", "⏎") or "∅"


@dataclass
class AttentionExplorer:
    """The explorer page for one text: `html` is the whole self-contained page; `save(path)` writes it, and in
    Jupyter the object shows itself inline (in an iframe, so its script and styles stay its own)."""

    html: str
    tokens: list[str]
    records: list[AttentionRecord]

    def save(self, path: str | Path) -> Path:
        target = Path(path)
        if target.suffix.lower() not in (".html", ".htm"):
            raise ValueError(f"The explorer is an HTML page: give a path ending in .html, got {str(target)!r}.")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(self.html, encoding="utf-8")
        return target

    def _repr_html_(self) -> str:
        return (
            f'<iframe srcdoc="{html.escape(self.html, quote=True)}" '
            'style="width: 100%; height: 760px; border: 1px solid #ddd" sandbox="allow-scripts allow-downloads">'
            "</iframe>"
        )


def attention_html(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    text: str,
    *,
    compare: PreTrainedModel | None = None,
    compare_tokenizer: PreTrainedTokenizerBase | None = None,
    names: tuple[str, str] | None = None,
    title: str | None = None,
) -> AttentionExplorer:
    """The attention explorer for `model` on `text`, optionally beside a second model `compare` on the same
    tokens: pass its own tokenizer as `compare_tokenizer` to have the two checked for the same token ids.
    `names` label the two models in the page.

    GPT-1's task tokens in the text (`<|start|>`, `<|delimiter|>`, `<|classify|>`) are recognised: the
    segments of a task-format input are coloured, and the classify view shows what `<|classify|>` reads.
    """
    input_ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids
    if input_ids.shape[1] == 0:
        raise ValueError(f"The text {text!r} has no tokens; pass some text to look at.")
    token_ids = [int(token_id) for token_id in input_ids[0]]
    first_name, second_name = names or ("model", "compared model")
    if compare_tokenizer is not None:
        compare_ids = compare_tokenizer(text, add_special_tokens=False).input_ids
        if compare_ids != token_ids:
            raise ValueError(
                f"The two models' tokenizers split the text differently ({len(token_ids)} and {len(compare_ids)} "
                "tokens, or different ids): compare models that share a tokenizer, such as a pretrained folder and "
                "a model fine-tuned from it."
            )
    models = [(model, first_name)] + ([(compare, second_name)] if compare is not None else [])
    for candidate, name in models:
        vocab_size = candidate.config.vocab_size
        if max(token_ids) >= vocab_size:
            raise ValueError(
                f"The tokenizer gives token id {max(token_ids)}, but {name!r} has vocab_size {vocab_size}: "
                "pass the tokenizer saved with the model (both models must share it to be compared)."
            )
    records = [record_attention(candidate, input_ids, name) for candidate, name in models]
    tokens = [readable_token(str(tokenizer.decode([token_id]))) for token_id in token_ids]
    kinds, segments = _token_kinds(tokenizer, token_ids)
    payload = {
        "title": title or f"Attention on {text if len(text) <= 70 else text[:67] + '…'!r}",
        "text": text,
        "tokens": tokens,
        "tokenIds": token_ids,
        "kinds": kinds,
        "segments": segments,
        "models": [_model_payload(record, token_ids) for record in records],
    }
    return AttentionExplorer(html=_page(payload), tokens=tokens, records=records)


def _page(payload: dict[str, Any]) -> str:
    """The template with its styles, script and data inlined, in one pass (no part is searched twice)."""
    assets = resources.files("gpt1") / ASSETS
    # JSON inside a <script> element: no "<" at all, so neither "</script>" nor "<!--" can end or upset it.
    data = json.dumps(payload, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")
    parts = {
        "STYLE": (assets / "explorer.css").read_text(encoding="utf-8"),
        "SCRIPT": (assets / "explorer.js").read_text(encoding="utf-8"),
        "DATA": data,
        "TITLE": html.escape(payload["title"]),
    }
    template = (assets / "explorer.html").read_text(encoding="utf-8")
    return re.sub(r"/\*(STYLE|SCRIPT|DATA|TITLE)\*/", lambda match: parts[match.group(1)], template)


def html_size_summary(explorer: AttentionExplorer) -> str:
    """One line for the CLI: tokens, models and the page's size."""
    size = len(explorer.html.encode("utf-8"))
    unit = f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{math.ceil(size / 1e3)} kB"
    models = " and ".join(record.name for record in explorer.records)
    return f"{len(explorer.tokens)} tokens, {models}, {unit}"
