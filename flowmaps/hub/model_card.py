"""Model cards built from a checkpoint's config.json: Hub metadata (ModelCardData) and a Markdown body.

Time convention (everywhere in flowmaps): t = 0 is noise, t = 1 is data.

Every card of flowmaps comes from :func:`model_card`, so a card is always what its config says:

- metadata: ``library_name: flowmaps``, license, ``pipeline_tag``, tags, ``datasets`` (for data
  that live on the Hub), ``base_model`` (config "base_model": the checkpoint this one was
  continued from) and the metrics as model-index entries (:mod:`flowmaps.hub.model_index`);
- body: config "card" (title, summary, data, network, method, steps, wall_time, hardware,
  metrics, usage, notes, other keys under "Details"), a sentence on what the network is (a
  flow map trained by self-distillation, a flow-matching velocity field, a feature network),
  the paper's link, the metrics table and the config.

``python -m flowmaps.hub FOLDER...`` rewrites each folder's README.md from its config.json (and
metrics.json).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from flowmaps.hub.model_index import dataset_of, eval_results, pipeline_tag
from flowmaps.utils import markdown_table, write_text_atomic

PAPER_URL = "https://arxiv.org/abs/2505.18825"
PAPER = f"Boffi, Albergo, Vanden-Eijnden, *How to build a consistency model: Learning flow maps via self-distillation*, [arXiv 2505.18825]({PAPER_URL})"  # noqa: E501
METRICS_NAME = "metrics.json"
"""Per-sampler evaluation rows (FID, KID, timing) kept beside an image checkpoint."""

SELF_DISTILLATION = {"lsd": "Lagrangian", "esd": "Eulerian", "psd-m": "progressive", "psd-u": "progressive"}
_TRAINING_FIELDS = (
    ("data", "Data"),
    ("network", "Network"),
    ("method", "Method"),
    ("steps", "Steps"),
    ("wall_time", "Wall time"),
    ("hardware", "Hardware"),
)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"  # 310,000 steps, as the README and the app write them
    return str(value)


def _fmt_seconds(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return str(seconds)
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


_LABEL_COLUMNS = ("", "sampler", "metric", "method", "N")
"""Columns that name a row; they come first (config.json stores its keys sorted)."""


def _metrics_table(metrics: Any) -> str:
    """Markdown table from {name: value}, {row: {col: value}} or [{col: value}, ...]."""
    if isinstance(metrics, dict) and all(not isinstance(v, dict) for v in metrics.values()):
        return markdown_table([{"metric": k, "value": v} for k, v in metrics.items()])
    rows = [{"": k, **v} for k, v in metrics.items()] if isinstance(metrics, dict) else list(metrics)
    seen = list(dict.fromkeys(k for row in rows for k in row))
    cols = [c for c in _LABEL_COLUMNS if c in seen] + [c for c in seen if c not in _LABEL_COLUMNS]
    return markdown_table(rows, cols)


def what_it_is(config: dict[str, Any]) -> str:
    """One paragraph: what the network computes and how it was trained, with the paper's link."""
    method = str(config.get("method", ""))
    if config.get("model") == "FeatureNet":
        return (
            "A small CNN classifier whose penultimate layer gives the features of flowmaps' FID and KID "
            f"(`flowmaps.fid`), used to score image samples of the flow maps of {PAPER}. Scores computed with "
            "it are comparable with each other, not with Inception-based FIDs from the literature."
        )
    if method == "fm":
        return (
            "A flow-matching velocity field v_{t,t}(x), the baseline of "
            f"{PAPER}: only the diagonal is trained (flow matching), so sample it with an ODE solver; it is "
            "not a flow map, and no self-distillation was used. Time runs from t = 0 (noise) to t = 1 (data)."
        )
    if method in SELF_DISTILLATION:
        how = f"trained by {SELF_DISTILLATION[method]} self-distillation ({method.upper()})"
    else:
        how = f"trained with the `{method or 'unknown'}` objective of flowmaps"
    return (
        f"A flow map X_{{s,t}}(x) = x + (t - s) v_{{s,t}}(x) {how}, after {PAPER}. Time runs from t = 0 "
        "(noise) to t = 1 (data); one network serves every number of sampling steps."
    )


def _qualified(base: str, repo_id: str | None) -> str:
    if "/" in base or not repo_id or "/" not in repo_id:
        return base
    return f"{repo_id.split('/')[0]}/{base}"


def title_of(config: dict[str, Any]) -> str:
    """The card's title: config "card" "title", else a default for the kind of network."""
    card = config.get("card") if isinstance(config.get("card"), dict) else {}
    if card.get("title"):
        return str(card["title"])
    if config.get("model") == "FeatureNet":
        return "Fashion-MNIST feature network for FID and KID (flowmaps)"
    return "flowmaps checkpoint"


def card_data(config: dict[str, Any], rows: dict[str, Any] | None = None, repo_id: str | None = None) -> ModelCardData:
    """The card's Hub metadata: library, license, pipeline tag, tags, data set, base model, model-index."""
    card = config.get("card") if isinstance(config.get("card"), dict) else {}
    is_classifier = config.get("model") == "FeatureNet"
    dataset_id, _, on_hub = dataset_of("fashion-mnist" if is_classifier else config.get("data"))
    method = str(config.get("method", ""))
    tags = ["flowmaps", "pytorch_model_hub_mixin", "model_hub_mixin"]
    if is_classifier:
        tags += ["fid", "feature-extractor"]
    elif method == "fm":
        tags += ["flow-matching"]
    else:
        tags += ["flow-map", "consistency-model"] + (["self-distillation"] if method in SELF_DISTILLATION else [])
    results = eval_results(config, rows)
    base = config.get("base_model")
    name = (repo_id or "").split("/")[-1] or title_of(config)
    return ModelCardData(
        library_name="flowmaps",
        license=card.get("license", "mit"),
        pipeline_tag=pipeline_tag(config),
        tags=tags,
        datasets=[dataset_id] if on_hub else None,
        base_model=_qualified(str(base), repo_id) if base else None,
        model_name=name if results else None,
        eval_results=results or None,
    )


def _classifier_body(config: dict[str, Any]) -> list[str]:
    m = config.get("metrics") or {}
    acc = m.get("test_accuracy")
    arch = {k: config[k] for k in ("width", "feature_dim", "num_classes", "dropout") if k in config}
    n_train = f"{m['n_train']:,}" if "n_train" in m else "?"
    out = [
        f"- **Data**: Fashion-MNIST training split ({n_train} images; Zalando Research, MIT licence)",
        f"- **Test accuracy** (Fashion-MNIST test split, {m.get('n_test', '?'):,} images): "
        + (f"**{100 * acc:.2f} %**" if acc is not None else "not measured"),
        f"- **Training accuracy** (first {min(10_000, m.get('n_train', 10_000)):,} training images, eval mode): "
        f"{100 * m.get('train_accuracy', math.nan):.2f} %",
        f"- **Network**: `FeatureNet({', '.join(f'{k}={v!r}' for k, v in arch.items())})`: conv3x3-BN-ReLU x2, "
        "max-pool, x2, max-pool, conv3x3-BN-ReLU, global average pool, linear (the features, before the ReLU), "
        "ReLU, dropout, linear (logits)",
        f"- **Training**: AdamW, cosine decay, {m.get('epochs')} epochs, batch {m.get('batch_size', '?')}, lr "
        f"{m.get('lr', '?')}, random flips and 2-pixel shifts: {m.get('augment', '?')}; "
        f"{_fmt_seconds(m.get('seconds', math.nan))} on {m.get('device', '?')}",
        "- **Input**: (N, 1, 28, 28) float images scaled to [-1, 1]",
        "",
    ]
    if m.get("fid_sanity"):
        ranked = sorted(m["fid_sanity"].items(), key=lambda kv: kv[1])
        rows = [{"comparison": k, "FID": round(v, 3)} for k, v in ranked]
        out += ["## FID sanity checks (features of this network)", "", markdown_table(rows), ""]
    out += [
        "## Usage",
        "",
        "```python",
        "from flowmaps.fid import FeatureNet, fid, reference_statistics",
        'net = FeatureNet.from_pretrained("<this folder or Hub id>")',
        "ref = reference_statistics(net=net)  # Fashion-MNIST test split",
        "score = fid(samples, ref, net=net)   # samples: (N, 1, 28, 28) in [-1, 1]",
        "```",
        "",
    ]
    return out


def _flowmap_body(card: dict[str, Any], rows: dict[str, Any] | None, data: ModelCardData) -> list[str]:
    card = dict(card)
    out = ["## Training", ""]
    for key, label in _TRAINING_FIELDS:
        if key in card:
            value = card.pop(key)
            out.append(f"- **{label}**: {_fmt_seconds(value) if key == 'wall_time' else _fmt(value)}")
    if data.base_model:
        out.append(f"- **Continued from**: {data.base_model}")
    out.append("")
    metrics = card.pop("metrics", None)
    if not metrics and rows:
        metrics = [{"sampler": key, **row} for key, row in rows.items()]
    if not metrics and data.eval_results:
        metrics = [{"metric": r.metric_name, "value": r.metric_value} for r in data.eval_results]
    if metrics:
        out += ["## Metrics", "", _metrics_table(metrics), ""]
    usage = card.pop(
        "usage",
        "```python\nfrom flowmaps.hub import from_pretrained\n\n"
        'model, config = from_pretrained("<this folder or Hub id>")\n```',
    )
    out += ["## Usage", "", str(usage), ""]
    notes = card.pop("notes", None)
    if card:
        out += ["## Details", ""] + [f"- **{k}**: {_fmt(v)}" for k, v in card.items()] + [""]
    if notes:
        out += ["## Notes", "", str(notes), ""]
    return out


def model_card(config: dict[str, Any], metrics_rows: dict[str, Any] | None = None, repo_id: str | None = None):
    """The model card of a checkpoint, from its config.json content.

    Args:
        config: config.json's content; its "card" dict holds the card's text fields.
        metrics_rows: the checkpoint's metrics.json (image models), if any.
        repo_id: the Hub repository the card is written for; names the model-index and qualifies
            a ``base_model`` given without an owner.

    Returns:
        a :class:`huggingface_hub.ModelCard`.
    """
    card = dict(config.get("card") or {}) if isinstance(config.get("card"), dict) else {}
    data = card_data(config, metrics_rows, repo_id)
    title = title_of(config)
    card.pop("title", None)
    text, summary = card.pop("text", None), card.pop("summary", None)
    card.pop("license", None)
    out = [f"# {title}", ""]
    if text:  # a card given as Markdown: its text is the body
        out += [str(text), ""]
    else:
        out += ([str(summary), ""] if summary else []) + [what_it_is(config), ""]
        if config.get("model") == "FeatureNet":
            out += _classifier_body(config)
        else:
            out += _flowmap_body(card, metrics_rows, data)
        shown = {k: v for k, v in config.items() if k != "card"}
        out += ["## Config", "", "```json", json.dumps(shown, indent=2, sort_keys=True), "```", ""]
    return ModelCard("---\n" + data.to_yaml() + "\n---\n\n" + "\n".join(out))


def render_model_card(card: dict[str, Any], config: dict[str, Any] | None = None) -> str:
    """The Markdown text (front matter and body) of the card ``card`` for ``config`` (see :func:`model_card`)."""
    return str(model_card({**(config or {}), "card": card}))


def read_metrics_rows(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The metrics.json rows of a checkpoint folder, or None when there are none (or they do not parse)."""
    path = Path(folder) / METRICS_NAME
    if not path.is_file():
        return None
    try:
        rows = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return rows if isinstance(rows, dict) and all(isinstance(v, dict) for v in rows.values()) else None


def write_model_card(folder: str | os.PathLike, repo_id: str | None = None) -> Path:
    """Rewrite ``folder/README.md`` (atomically) from its config.json and metrics.json; returns its path.

    Raises:
        FileNotFoundError: the folder has no config.json.
    """
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    card = model_card(config, read_metrics_rows(folder), repo_id)
    return write_text_atomic(folder / "README.md", str(card))
