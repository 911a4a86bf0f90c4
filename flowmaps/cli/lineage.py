"""Where a run's network came from: ``flowmaps train --init-from CHECKPOINT``.

Time convention: t = 0 is noise, t = 1 is data.

A run may start from another checkpoint's network (the shipped image models are chains: flow
matching, then stages of self-distillation). The network's config and weights are the
checkpoint's; a learned loss weight starts afresh. The card then counts the steps and wall time of
the whole chain and lists its stages, oldest first; the config keeps the parent under
``"init_from"`` (its checkpoint, steps, wall time and stages) and the chain under ``"stages"``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

__all__ = ["Lineage"]


def _leading_int(value: Any) -> int:
    """Steps from a card: an int, or a string that starts with one ("8547 in all ...")."""
    if isinstance(value, (int, float)):
        return int(value)
    digits = str(value).strip().split(" ")[0].replace(",", "")
    return int(digits) if digits.isdigit() else 0


def _seconds(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def parent_history(config: dict[str, Any]) -> tuple[int, float, list[str]]:
    """(steps, wall time in seconds, stages) of the chain behind a checkpoint, from its config.

    Reads configs written by ``flowmaps train`` ("train", "steps", "wall_time", "stages",
    "init_from") and the earlier layout of the shipped image models (the card inside the config).
    """
    card = config.get("card", {})
    method = config.get("method", "?")
    if "card" not in config:
        before = int(config.get("init_from", {}).get("steps", 0))
        steps = before + int(config.get("steps", 0))
        stages = config.get("stages") or [f"{config.get('steps', 0)} steps of {method}"]
        return steps, _seconds(config.get("wall_time", 0.0)), list(stages)
    steps = _leading_int(card.get("steps", 0))
    if card.get("stages"):
        stages = list(card["stages"])
    elif config.get("init_from"):
        parent = config["init_from"]
        before = _leading_int(parent.get("steps", 0))
        parent_method = str(parent.get("card", {}).get("method", "?")).split(":")[0]
        stages = [f"{before} steps of {parent_method}", f"{steps - before} steps of {method}"]
    else:
        stages = [f"{steps} steps of {method}"]
    return steps, _seconds(card.get("wall_time", 0.0)), stages


@dataclass
class Lineage:
    """The parent checkpoint of a run (none: ``source`` is None) and what the card and config say of it."""

    source: str | None = None
    model: nn.Module | None = None
    config: dict[str, Any] = field(default_factory=dict)
    steps: int = 0
    wall_time: float = 0.0
    stages: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, source: str | None, data: str) -> Lineage:
        """Load the checkpoint ``source`` (folder or Hub id), or an empty lineage for None.

        Raises:
            FileNotFoundError / ValueError: no loadable checkpoint there (from ``from_pretrained``),
                or one trained on other data than ``data``.
        """
        if source is None:
            return cls()
        from flowmaps.hub import from_pretrained

        model, config = from_pretrained(source)
        if config.get("data", data) != data:
            raise ValueError(f"--init-from {source} was trained on {config['data']}, not on --data {data}")
        steps, wall, stages = parent_history(config)
        return cls(str(source), model, config, steps, wall, stages)

    def adopt_network(self, model_config: dict[str, Any]) -> None:
        """Give ``model_config`` the parent's network and noise scale (in place)."""
        if self.source is None:
            return
        model_config["net"] = dict(self.config["net"])
        model_config["sigma"] = self.config.get("sigma", model_config["sigma"])
        model_config["interpolant"] = self.config.get("interpolant", model_config.get("interpolant", "linear"))

    def load_weights(self, model: nn.Module) -> None:
        """Copy the parent's network weights into ``model.net`` (a learned loss weight starts afresh)."""
        if self.model is not None:
            model.net.load_state_dict(self.model.net.state_dict())

    def config_entries(self) -> dict[str, Any]:
        """``{"init_from": ...}`` for the run's config (nothing without a parent)."""
        if self.source is None:
            return {}
        return {
            "init_from": {
                "checkpoint": self.source,
                "steps": self.steps,
                "wall_time": self.wall_time,
                "stages": self.stages,
            }
        }

    def run_entries(self, step: int, wall: float, stage: str) -> dict[str, Any]:
        """The chain's wall time and (with a parent) its stages after ``step`` steps of ``stage`` in ``wall`` s."""
        entries: dict[str, Any] = {"wall_time": self.wall_time + wall}
        if self.source is not None:
            entries["stages"] = [*self.stages, f"{step} steps of {stage}"]
        return entries

    def card_entries(self, step: int, wall: float, stage: str) -> dict[str, Any]:
        """Steps and wall time of the whole chain for the card (and its stages with a parent)."""
        return {"steps": self.steps + step, **self.run_entries(step, wall, stage)}
