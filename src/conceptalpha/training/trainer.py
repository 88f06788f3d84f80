"""The trainer shared by every neural model (SPEC §6).

One optimiser step = ``days_per_step`` trading days (1 = the paper: one day's
cross-section per batch), days shuffled each epoch, Adam, gradient values
clipped. After each epoch the average of the last ``average_last`` epochs'
weights is evaluated on the validation days; the best average by mean daily IC
is kept; training stops after ``patience`` epochs without improvement.

Every epoch ends with an atomic ``run_dir/checkpoint.pt`` holding everything a
resumed run needs to continue *to the same result*: model, optimiser, torch RNG
and day-shuffling RNG states, history, the recent weights, the best weights.

Model interface: ``forward(x, membership, market_cap) -> [N]``; optional
``forward_days(xs, memberships, market_caps)`` (several days, one encoder pass),
``training_loss(batch: dict) -> Tensor`` (replaces MSE during training) and
``on_epoch_end()``. A model with ``uses_market = True`` is also given the day's
market vector [M] as ``forward(..., market=m)`` (the dataset's market context).

``loss``: ``"mse"`` (the paper) or ``"ic"``, minus each day's Pearson correlation
between the scores and the training labels of its labelled stocks, which
rewards the cross-sectional order the strategies trade and ignores the scale.
A model with its own ``training_loss`` accepts only ``"mse"``.

``drop_extreme_labels`` (training days only): the share q of each day's most
extreme training labels, half from each tail, is dropped and the remaining
labels are normalised again as the dataset normalised them (MASTER's protocol);
validation scoring and predictions never see this.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from tqdm.auto import tqdm

from conceptalpha.concepts.graph import sparse_to_torch
from conceptalpha.errors import UserError
from conceptalpha.features.daydata import DayData, DayDataset
from conceptalpha.features.processors import drop_extreme_labels
from conceptalpha.io import atomic_path, write_json
from conceptalpha.training.seed import resolve_device, set_seed

log = logging.getLogger(__name__)

MembershipFn = Callable[[DayData], "sp.spmatrix | None"]

#: Config fields that may differ between a checkpoint and a resumed run: they
#: do not change what the completed epochs computed.
RESUMABLE_CHANGES = frozenset({"max_epochs", "show_progress", "device"})


class TrainingDiverged(UserError):
    """The training loss became NaN or infinite."""


class TrainerConfig(BaseModel):
    """Training options. ``select_on``: the label validation IC is measured against
    ("raw" = the raw return, honest default; "train" = the processed training label)."""

    model_config = ConfigDict(extra="forbid")

    max_epochs: int = Field(200, ge=1)
    patience: int = Field(30, ge=1)
    lr: float = Field(2e-4, gt=0)
    clip_value: float | None = Field(3.0, gt=0)
    average_last: int = Field(5, ge=1)
    days_per_step: int = Field(1, ge=1)
    device: str = "auto"
    seed: int = 0
    show_progress: bool = True
    weight_decay: float = Field(0.0, ge=0)
    select_on: Literal["raw", "train"] = "raw"
    drop_extreme_labels: float = Field(0.0, ge=0, lt=1)
    loss: Literal["mse", "ic"] = "mse"


@dataclass
class FitResult:
    best_epoch: int
    best_valid_ic: float
    history: list[dict]
    train_seconds: float
    best_path: Path
    stopped_early: bool
    valid_scores: np.ndarray | None = None  # the selected weights' scores of every validation day, concatenated


@dataclass
class DayBatch:
    """One day's model inputs on the device."""

    t: int
    date: pd.Timestamp
    instruments: np.ndarray
    x: torch.Tensor
    membership: torch.Tensor | None
    market_cap: torch.Tensor
    y: torch.Tensor  # training label, NaN where missing
    y_raw: np.ndarray
    market: torch.Tensor | None = None  # the day's market vector [M]

    def as_dict(self) -> dict[str, Any]:
        return {
            "x": self.x,
            "membership": self.membership,
            "market_cap": self.market_cap,
            "y": self.y,
            "t": self.t,
            "instruments": self.instruments,
            "market": self.market,
        }


class DayLoader:
    """Turns dataset days into :class:`DayBatch` (membership tensors cached per day)."""

    def __init__(self, dataset: DayDataset, membership: MembershipFn | None, device: torch.device):
        self.dataset, self.membership, self.device = dataset, membership, device
        self._membership_cache: dict[int, torch.Tensor | None] = {}

    def __call__(self, t: int) -> DayBatch:
        day = self.dataset.day(t)
        return DayBatch(
            t=t,
            date=day.date,
            instruments=day.instruments,
            x=torch.from_numpy(np.ascontiguousarray(day.x, dtype=np.float32)).to(self.device),
            membership=self._day_membership(day),
            market_cap=torch.from_numpy(np.asarray(day.market_cap, dtype=np.float32)).to(self.device),
            y=torch.from_numpy(np.asarray(day.y_train, dtype=np.float32)).to(self.device),
            y_raw=np.asarray(day.y_raw),
            market=None if day.market is None else torch.from_numpy(np.asarray(day.market, dtype=np.float32)).to(self.device),
        )

    def training_batch(self, t: int, drop_extreme: float) -> DayBatch:
        """The day's batch for a training step, without its ``drop_extreme`` share of most extreme labels."""
        batch = self(t)
        if drop_extreme > 0:
            kept = drop_extreme_labels(batch.y.cpu().numpy(), drop_extreme, self.dataset.label_norm)
            batch.y = torch.from_numpy(kept).to(self.device)
        return batch

    def _day_membership(self, day: DayData) -> torch.Tensor | None:
        if self.membership is None:
            return None
        if day.t not in self._membership_cache:
            self._membership_cache[day.t] = sparse_to_torch(self.membership(day), self.device)
        return self._membership_cache[day.t]


# --------------------------------------------------------------------- state
@dataclass
class TrainState:
    """Everything that evolves across epochs (saved in the checkpoint)."""

    epoch: int = 0  # epochs completed
    history: list[dict] = field(default_factory=list)
    recent: list[dict] = field(default_factory=list)  # state_dicts of the last `average_last` epochs
    best_state: dict | None = None
    best_valid_scores: torch.Tensor | None = None  # best_state's scores on the validation days, concatenated
    best_ic: float = float("nan")
    best_epoch: int = 0
    bad_epochs: int = 0
    train_seconds: float = 0.0

    def finished(self, config: TrainerConfig) -> bool:
        return self.bad_epochs >= config.patience or self.epoch >= config.max_epochs


def _save_checkpoint(path: Path, config, state: TrainState, model, optimizer, shuffle_rng) -> None:
    payload = {
        "config": config.model_dump(),
        "state": vars(state),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "shuffle_rng": shuffle_rng.bit_generator.state,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def _load_checkpoint(path: Path, config: TrainerConfig, model, optimizer, shuffle_rng) -> TrainState:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"{path}: unreadable checkpoint ({type(exc).__name__}: {exc})") from None
    saved, wanted = payload["config"], config.model_dump()
    # an option added after the checkpoint was written ran at its default
    saved = {k: saved.get(k, TrainerConfig.model_fields[k].default) for k in wanted}
    changed = sorted(k for k in wanted if k not in RESUMABLE_CHANGES and saved[k] != wanted[k])
    if changed:
        diffs = ", ".join(f"{k}: checkpoint {saved.get(k)!r} vs now {wanted[k]!r}" for k in changed)
        raise UserError(f"{path}: cannot resume, the training config differs ({diffs})")
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    torch.set_rng_state(payload["torch_rng"])
    if payload["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(payload["cuda_rng"])
    shuffle_rng.bit_generator.state = payload["shuffle_rng"]
    return TrainState(**payload["state"])


# --------------------------------------------------------------------- maths
def daily_ic(score: np.ndarray, label: np.ndarray) -> float:
    """Pearson correlation over stocks with finite score and label; NaN if < 2 or constant."""
    ok = np.isfinite(score) & np.isfinite(label)
    if ok.sum() < 2:
        return float("nan")
    s, y = score[ok] - score[ok].mean(), label[ok] - label[ok].mean()
    denominator = np.sqrt((s * s).sum() * (y * y).sum())
    return float((s * y).sum() / denominator) if denominator > 0 else float("nan")


def average_state_dicts(states: Sequence[dict]) -> dict:
    """Element-wise mean of floating-point entries; other entries from the latest state."""
    latest = states[-1]
    return {
        key: torch.stack([s[key] for s in states]).mean(0) if value.is_floating_point() else value.clone()
        for key, value in latest.items()
    }


def _cpu_copy(state_dict: dict) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in state_dict.items()}


# --------------------------------------------------------------------- steps
def _predict_days(model: nn.Module, batches: list[DayBatch]) -> list[torch.Tensor]:
    if len(batches) > 1 and hasattr(model, "forward_days"):
        return model.forward_days(
            [b.x for b in batches], [b.membership for b in batches], [b.market_cap for b in batches]
        )
    return [_forward(model, b) for b in batches]


def _forward(model: nn.Module, b: DayBatch) -> torch.Tensor:
    """The model's scores [N] for one day (with the market vector for a model that uses it)."""
    if getattr(model, "uses_market", False):
        return model(b.x, b.membership, b.market_cap, market=b.market)
    return model(b.x, b.membership, b.market_cap)


def negative_ic(prediction: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Minus the Pearson correlation of ``prediction`` and ``label`` [N] (0 when either is constant)."""
    p, y = prediction - prediction.mean(), label - label.mean()
    return -(p * y).sum() / ((p * p).sum() * (y * y).sum()).sqrt().clamp_min(1e-12)


DAY_LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "mse": lambda prediction, label: torch.mean((prediction - label) ** 2),
    "ic": negative_ic,
}


def _step_loss(model: nn.Module, batches: list[DayBatch], loss: str = "mse") -> torch.Tensor:
    """Mean over the step's days of each day's loss on its labelled stocks (or the model's own loss)."""
    if hasattr(model, "training_loss"):
        losses = [model.training_loss(b.as_dict()) for b in batches]
    else:
        day_loss = DAY_LOSSES[loss]
        losses = []
        for prediction, b in zip(_predict_days(model, batches), batches):
            labelled = torch.isfinite(b.y)
            losses.append(day_loss(prediction[labelled], b.y[labelled]))
    return torch.stack(losses).mean()


def _train_epoch(model, optimizer, load: DayLoader, order: np.ndarray, config: TrainerConfig, epoch: int) -> float:
    model.train()
    losses = []
    steps = range(0, len(order), config.days_per_step)
    for start in tqdm(steps, desc=f"epoch {epoch}", leave=False, disable=not config.show_progress):
        batches = [load.training_batch(int(t), config.drop_extreme_labels) for t in order[start : start + config.days_per_step]]
        batches = [b for b in batches if torch.isfinite(b.y).any()]
        if not batches:
            continue
        optimizer.zero_grad(set_to_none=True)
        loss = _step_loss(model, batches, config.loss)
        if not torch.isfinite(loss):
            dates = ", ".join(str(b.date.date()) for b in batches)
            raise TrainingDiverged(
                f"training diverged: loss is {loss.item()} at epoch {epoch} on day(s) {dates}; "
                "check the features for inf/huge values or lower the learning rate"
            )
        loss.backward()
        if config.clip_value is not None:
            nn.utils.clip_grad_value_(model.parameters(), config.clip_value)
        optimizer.step()
        losses.append(loss.item())
    return float(np.mean(losses)) if losses else float("nan")


@torch.no_grad()
def _scored_days(model: nn.Module, load: DayLoader, days: Sequence[int]) -> Iterator[tuple[DayBatch, np.ndarray]]:
    """(day, scores [N]) for each of ``days`` in order, in eval mode."""
    model.eval()
    for t in days:
        b = load(t)
        yield b, _forward(model, b).cpu().numpy() if len(b.x) else np.zeros(0)


def _validate(model: nn.Module, load: DayLoader, days: Sequence[int], select_on: str) -> tuple[float, np.ndarray]:
    """Mean daily IC over ``days`` and the scores of all of them, concatenated in order."""
    ics, scores = [], []
    for b, score in _scored_days(model, load, days):
        scores.append(score)
        if len(score):
            ics.append(daily_ic(score, b.y_raw if select_on == "raw" else b.y.cpu().numpy()))
    finite = np.asarray(ics)[np.isfinite(ics)] if ics else np.asarray([])
    mean_ic = float(finite.mean()) if finite.size else float("nan")
    return mean_ic, np.concatenate(scores) if scores else np.zeros(0, dtype=np.float32)


# --------------------------------------------------------------------- fit
def fit(
    model: nn.Module,
    dataset: DayDataset,
    membership: MembershipFn | None,
    config: TrainerConfig,
    run_dir: str | Path,
    resume: bool = False,
    on_epoch: Callable[[dict], None] | None = None,
) -> FitResult:
    """Train ``model`` in place; on return it holds the selected averaged weights (also in ``best.pt``).

    Seed the process (:func:`set_seed`) *before* building the model for a
    reproducible initialisation; ``fit`` seeds dropout and shuffling from
    ``config.seed``. ``resume=True`` continues from ``run_dir/checkpoint.pt``
    (or starts fresh if there is none) and reaches the same result as an
    uninterrupted run. ``on_epoch`` receives each epoch's history entry (epoch,
    train_loss, valid_ic, seconds) with ``max_epochs``, ``best_ic`` and
    ``best_epoch`` once its checkpoint is saved.
    """
    run_dir = Path(run_dir)
    train_days, valid_days = list(dataset.days("train")), list(dataset.days("valid"))
    if not train_days or not valid_days:
        raise UserError(f"training needs train and valid days; got {len(train_days)} and {len(valid_days)}")
    if config.loss != "mse" and hasattr(model, "training_loss"):
        raise UserError(f"trainer.loss {config.loss!r}: {type(model).__name__} trains on its own loss; use 'mse'")
    if config.drop_extreme_labels > 0 and not hasattr(dataset, "label_norm"):
        raise UserError("trainer.drop_extreme_labels needs a dataset that names its label normalisation (label_norm)")
    device = resolve_device(config.device)
    model.to(device)
    fused = device.type in ("cpu", "cuda")  # one kernel for all parameters, not a dozen small operations each
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, fused=fused)
    set_seed(config.seed)
    shuffle_rng = np.random.default_rng(config.seed)
    checkpoint = run_dir / "checkpoint.pt"
    state = TrainState()
    if resume and checkpoint.exists():
        state = _load_checkpoint(checkpoint, config, model, optimizer, shuffle_rng)
        log.info("resuming %s after epoch %d", run_dir, state.epoch)
    elif resume:
        log.info("no checkpoint in %s: starting fresh", run_dir)

    load = DayLoader(dataset, membership, device)
    bar = tqdm(total=config.max_epochs, initial=state.epoch, desc="epochs", disable=not config.show_progress)
    while not state.finished(config):
        _run_epoch(model, optimizer, load, shuffle_rng, train_days, valid_days, config, state)
        _save_checkpoint(checkpoint, config, state, model, optimizer, shuffle_rng)
        last = state.history[-1]
        bar.update(1)
        bar.set_postfix(loss=f"{last['train_loss']:.4f}", ic=f"{last['valid_ic']:.4f}", best=f"{state.best_ic:.4f}")
        if on_epoch is not None:
            on_epoch({**last, "max_epochs": config.max_epochs, "best_ic": state.best_ic, "best_epoch": state.best_epoch})
    bar.close()
    return _finish(model, state, config, run_dir, device)


def _run_epoch(model, optimizer, load, shuffle_rng, train_days, valid_days, config, state: TrainState) -> None:
    """One epoch: train on shuffled days, evaluate the averaged recent weights, update ``state``."""
    epoch = state.epoch + 1
    started = time.perf_counter()
    order = shuffle_rng.permutation(np.asarray(train_days))
    train_loss = _train_epoch(model, optimizer, load, order, config, epoch)
    if hasattr(model, "on_epoch_end"):
        model.on_epoch_end()
    current = _cpu_copy(model.state_dict())
    state.recent = (state.recent + [current])[-config.average_last :]
    averaged = average_state_dicts(state.recent)
    model.load_state_dict(averaged)
    valid_ic, valid_scores = _validate(model, load, valid_days, config.select_on)
    model.load_state_dict(current)
    # NaN never improves on a finite best, but any finite IC improves on a NaN best.
    if state.best_state is None or (np.isfinite(valid_ic) and not valid_ic <= state.best_ic):
        state.best_state, state.best_ic, state.best_epoch = averaged, valid_ic, epoch
        state.best_valid_scores = torch.from_numpy(valid_scores)
        state.bad_epochs = 0
    else:
        state.bad_epochs += 1
    seconds = time.perf_counter() - started
    state.train_seconds += seconds
    state.epoch = epoch
    state.history.append({"epoch": epoch, "train_loss": train_loss, "valid_ic": valid_ic, "seconds": seconds})


def _finish(model, state: TrainState, config: TrainerConfig, run_dir: Path, device) -> FitResult:
    best_path = run_dir / "best.pt"
    with atomic_path(best_path) as tmp:
        torch.save(state.best_state, tmp)
    write_json(run_dir / "history.json", state.history)
    model.load_state_dict(state.best_state)
    model.to(device)
    return FitResult(
        best_epoch=state.best_epoch,
        best_valid_ic=state.best_ic,
        history=state.history,
        train_seconds=state.train_seconds,
        best_path=best_path,
        stopped_early=state.bad_epochs >= config.patience,
        valid_scores=None if state.best_valid_scores is None else state.best_valid_scores.numpy(),
    )


def fit_seeds(
    make_model: Callable[[], nn.Module],
    dataset: DayDataset,
    membership: MembershipFn | None,
    config: TrainerConfig,
    run_dir: str | Path,
    seeds: Sequence[int],
    resume: bool = False,
) -> list[tuple[nn.Module, FitResult]]:
    """One :func:`fit` per seed in ``run_dir/seed<s>``; the model is built after seeding."""
    results = []
    for seed in seeds:
        set_seed(seed)
        model = make_model()
        seeded = config.model_copy(update={"seed": seed})
        results.append((model, fit(model, dataset, membership, seeded, Path(run_dir) / f"seed{seed}", resume)))
    return results


def predict(
    model: nn.Module,
    dataset: DayDataset,
    segment: str,
    membership: MembershipFn | None = None,
    device: str = "auto",
) -> pd.DataFrame:
    """Scores of every stock of every day of ``segment``: columns datetime, instrument, score, label (raw)."""
    torch_device = resolve_device(device)
    model.to(torch_device)
    load = DayLoader(dataset, membership, torch_device)
    scored = [((b.date, b.instruments, b.y_raw), score) for b, score in _scored_days(model, load, dataset.days(segment))]
    return _predictions_frame([day for day, _ in scored], [score for _, score in scored], segment)


def segment_predictions(dataset: DayDataset, segment: str, scores: np.ndarray) -> pd.DataFrame:
    """:func:`predict`'s table from ``scores`` already computed for every stock of every day of
    ``segment``, concatenated in day order (as ``FitResult.valid_scores``)."""
    days = [dataset.day(t) for t in dataset.days(segment)]
    return _predictions_frame([(day.date, day.instruments, day.y_raw) for day in days], [scores], segment)


def _predictions_frame(days: list[tuple], scores: list[np.ndarray], segment: str) -> pd.DataFrame:
    """The table of ``days`` ((date, instruments, raw labels) each) and their scores, in day order."""
    if not days:
        return pd.DataFrame({"datetime": [], "instrument": [], "score": [], "label": []})
    sizes = [len(instruments) for _, instruments, _ in days]
    flat = np.concatenate(scores) if scores else np.zeros(0)
    if len(flat) != sum(sizes):
        raise ValueError(f"{len(flat)} scores for the {sum(sizes)} rows of segment {segment!r}")
    return pd.DataFrame(
        {
            "datetime": np.repeat(np.asarray([date for date, _, _ in days], dtype="datetime64[ns]"), sizes),
            "instrument": np.concatenate([np.asarray(instruments) for _, instruments, _ in days]),
            "score": flat.astype(np.float64),
            "label": np.concatenate([labels for _, _, labels in days]).astype(np.float64),
        }
    )
