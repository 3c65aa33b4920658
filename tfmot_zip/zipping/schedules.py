"""When ZipCallback zips each layer during ``model.fit``.

A schedule is a plain, frozen configuration object (like TFMOT's pruning schedules): it says
how many training steps feed each layer's Hessians and how many retraining steps follow the
zipping of each layer.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

__all__ = ["ZipSchedule", "LayerwiseSchedule", "OneShotSchedule"]


class ZipSchedule:
    """Base class: ``calibration_steps`` and ``retrain_steps_for(stage)`` define the schedule."""

    calibration_steps: int = 0

    def retrain_steps_for(self, stage: int) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def get_config(self) -> dict:
        return {"class_name": type(self).__name__, "config": asdict(self)}  # type: ignore[call-overload]

    @staticmethod
    def from_config(config: dict) -> "ZipSchedule":
        classes = {"LayerwiseSchedule": LayerwiseSchedule, "OneShotSchedule": OneShotSchedule}
        try:
            cls = classes[config["class_name"]]
        except KeyError:
            raise ValueError(f"Unknown schedule {config.get('class_name')!r}; expected one of {sorted(classes)}.") from None
        cfg = dict(config["config"])
        if isinstance(cfg.get("retrain_steps"), list):
            cfg["retrain_steps"] = tuple(cfg["retrain_steps"])
        return cls(**cfg)


def _nonneg_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"Expected a non-negative integer. Received: {name}={value!r}")
    return value


@dataclass(frozen=True)
class LayerwiseSchedule(ZipSchedule):
    """The paper's schedule: zip one layer, retrain a little (more for deeper layers), go on.

    Args:
        calibration_steps: training steps whose batches accumulate the Hessians of the layer
            about to be zipped (ignored when ZipCallback is given calibration data).
        retrain_steps: retraining steps after each zipped layer: one int for every layer, or
            one per stage (pass x hidden layer, bottom-up).
        growth: with an int ``retrain_steps``, stage ``l`` retrains
            ``round(retrain_steps * growth ** l)`` steps ("a short, growing number").

    Example:
        >>> LayerwiseSchedule(calibration_steps=20, retrain_steps=50, growth=2.0).retrain_steps_for(2)
        200
    """

    calibration_steps: int = 20
    retrain_steps: int | Sequence[int] = 50
    growth: float = 1.0

    def __post_init__(self) -> None:
        _nonneg_int(self.calibration_steps, "calibration_steps")
        if isinstance(self.retrain_steps, (list, tuple)):
            for i, v in enumerate(self.retrain_steps):
                _nonneg_int(v, f"retrain_steps[{i}]")
        else:
            _nonneg_int(self.retrain_steps, "retrain_steps")
        if not (isinstance(self.growth, (int, float)) and self.growth > 0):
            raise ValueError(f"Expected a positive growth. Received: growth={self.growth!r}")

    def retrain_steps_for(self, stage: int) -> int:
        if isinstance(self.retrain_steps, (list, tuple)):
            if stage >= len(self.retrain_steps):
                raise ValueError(
                    f"retrain_steps has {len(self.retrain_steps)} entries but the model has more zipping "
                    f"stages (stage {stage}); give one entry per hidden layer (and per merged model)."
                )
            return int(self.retrain_steps[stage])
        return int(round(self.retrain_steps * self.growth**stage))

    def total_retrain_steps(self, stages: int) -> int:
        """Retraining steps the whole schedule uses, excluding calibration steps."""
        return sum(self.retrain_steps_for(i) for i in range(stages))


@dataclass(frozen=True)
class OneShotSchedule(ZipSchedule):
    """Zips every layer at the first step (Hessians from ZipCallback's calibration data or
    from ``calibration_steps`` batches per layer, without retraining in between).

    Example:
        >>> OneShotSchedule().retrain_steps_for(3)
        0
    """

    calibration_steps: int = 20

    def __post_init__(self) -> None:
        _nonneg_int(self.calibration_steps, "calibration_steps")

    def retrain_steps_for(self, stage: int) -> int:
        return 0
