"""The experiment config: YAML → pydantic, validated at load.

A config names the data, concepts, features/label, segments, models, seeds,
trainer, backtest and output. ``--set key.path=value`` overrides are applied to
the raw mapping before validation, so an override is checked exactly like a
value in the file. Unknown keys are errors that name the nearest valid key.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from conceptalpha.errors import UserError

SYNTHETIC = "synthetic"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SyntheticData(Strict):
    """Size of the built-in synthetic market (see ``conceptalpha.data.synthetic.SynthConfig``)."""

    seed: int = 0
    n_stocks: int = 300
    n_years: int = 6
    market: Literal["cn", "us"] = Field("cn", description="cn: A-share codes and concepts; us: US-style tickers, an industry table.")
    extra: dict[str, Any] = Field(default_factory=dict, description="Further SynthConfig fields.")


class DerivedUniverse(Strict):
    """The N largest members of the base universe by market cap, re-selected in the given months."""

    name: str = "csi100"
    n: int = Field(100, ge=1)
    months: list[int] = Field(default_factory=lambda: [6, 12])


class DataSection(Strict):
    provider: str = SYNTHETIC
    universe: str = "csi300"
    start: str | None = None
    end: str | None = None
    shares: list[str] = Field(default_factory=list, description="Share-count tables for market caps.")
    synthetic: SyntheticData = Field(default_factory=SyntheticData)
    derived_universe: DerivedUniverse | None = None
    vwap_proxy: bool = False
    market: Literal["cn", "generic", "auto"] = Field(
        "auto",
        description="Files' market: cn (A-share codes and rules), generic (any tickers, no price limits), auto (cn when every "
        "instrument is an A-share code). The synthetic market's is synthetic.market.",
    )
    benchmark: str | None = Field(None, description="Benchmark instrument (e.g. SPY); None: SH000300 for cn, none for generic.")
    st_table: str | None = Field(None, description="A-shares: dated ST table (instrument,start,end) for the ±5% limit.")


class ConceptSource(Strict):
    kind: str
    path: str


class ConceptsSection(Strict):
    sources: list[ConceptSource] = Field(default_factory=list)
    min_members: int = Field(3, ge=1)

    @field_validator("sources", mode="before")
    @classmethod
    def _parse_kind_path(cls, value: Any) -> Any:
        """Accept ``KIND:PATH`` strings as well as {kind, path} mappings."""
        if not isinstance(value, list):
            return value
        out = []
        for item in value:
            if isinstance(item, str):
                kind, sep, path = item.partition(":")
                if not sep:
                    raise ValueError(f"concept source {item!r} must be KIND:PATH")
                item = {"kind": kind, "path": path}
            out.append(item)
        return out


class FeaturesSection(Strict):
    feature_set: Literal["alpha360", "alpha158"] = "alpha360"
    label: str = "t+1->t+2"
    label_norm: Literal["rank", "zscore"] = "rank"
    window: int | None = Field(None, ge=1, description="Alpha158 only: each row stacks the stock's last `window` days of Alpha158 rows.")
    market_context: bool = Field(False, description="Add the day's market vector (index and cross-section state).")


class Segments(Strict):
    train: tuple[str, str]
    valid: tuple[str, str]
    test: tuple[str, str]


class ModelEntry(Strict):
    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    trainer: dict[str, Any] = Field(default_factory=dict)
    features: Literal["alpha360", "alpha158"] | None = None


class RollingSection(Strict):
    """Walk-forward retraining: test windows of ``step_months`` from the test start on.

    Each window retrains on ``train_months`` (``fixed``) or on everything since the
    configured train start (``expanding``), validates on the ``valid_months`` just
    before its test window, and tests on the window.
    """

    enabled: bool = False
    step_months: int = Field(12, ge=1)
    train_months: int = Field(60, ge=1)
    valid_months: int = Field(12, ge=1)
    mode: Literal["expanding", "fixed"] = "fixed"


class GridSection(Strict):
    """Lists a grid expands besides ``models`` and ``seeds`` (empty = the run's own value)."""

    universes: list[str] = Field(default_factory=list)
    windows: list[Segments] = Field(default_factory=list)


class ExperimentConfig(Strict):
    name: str = "experiment"
    data: DataSection = Field(default_factory=DataSection)
    concepts: ConceptsSection = Field(default_factory=ConceptsSection)
    features: FeaturesSection = Field(default_factory=FeaturesSection)
    segments: Segments
    models: list[ModelEntry]
    seeds: list[int] = Field(default_factory=lambda: [0])
    trainer: dict[str, Any] = Field(default_factory=dict, description="TrainerConfig fields for every neural model.")
    backtest: dict[str, Any] = Field(default_factory=dict, description="BacktestConfig fields.")
    rolling: RollingSection = Field(default_factory=RollingSection)
    grid: GridSection = Field(default_factory=GridSection)
    threads: int = Field(
        1, ge=0, description="torch CPU threads (0 = torch's default). One is fastest for per-day batches of a few hundred stocks."
    )
    workers: int = Field(
        1, ge=1, description="model × seed jobs trained at once, each in its own process with `threads` torch threads."
    )
    output: str = "runs/experiment"
    cache_dir: str | None = None

    @field_validator("models", mode="before")
    @classmethod
    def _names_to_entries(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list):
            return [{"name": v} if isinstance(v, str) else v for v in value]
        return value

    @model_validator(mode="after")
    def _check_models(self) -> "ExperimentConfig":
        from conceptalpha.models.registry import get_model_spec

        for entry in self.models:
            get_model_spec(entry.name)
        if not self.models:
            raise ValueError("models: at least one model is required")
        if not self.seeds:
            raise ValueError("seeds: at least one seed is required")
        return self

    @property
    def is_synthetic(self) -> bool:
        return self.data.provider == SYNTHETIC


# ---------------------------------------------------------------- loading


def load_config(path: str | Path | None, overrides: list[str] = (), base: dict | None = None) -> ExperimentConfig:
    """Read a YAML config (or start from ``base``), apply ``--set`` overrides, validate."""
    raw = dict(base or {})
    if path is not None:
        raw = _read_yaml(Path(path))
    for item in overrides:
        apply_override(raw, item)
    return validate_config(raw, source=str(path) if path else "config")


def _read_yaml(path: Path) -> dict:
    if not path.exists():
        raise UserError(f"config file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML ({err.__class__.__name__}: {str(err).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    return raw


def apply_override(raw: dict, item: str) -> None:
    """Apply ``key.path=value`` (value parsed as YAML) to the raw mapping, in place.

    ``models=HIST,GRU`` selects models by registered name with their defaults.
    """
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise UserError(f"--set {item!r}: expected key.path=value")
    path = key.strip().split(".")
    value = yaml.safe_load(text) if text.strip() else None
    if path == ["models"] and isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    node = raw
    for part in path[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise UserError(f"--set {item!r}: {part!r} is not a section")
        node = child
    node[path[-1]] = value


def validate_config(raw: dict, source: str = "config") -> ExperimentConfig:
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as err:
        raise UserError(f"{source}: {_explain(err)}") from None


def _explain(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = [str(p) for p in first["loc"]]
    where = ".".join(loc) or "(top level)"
    if first["type"] == "extra_forbidden":
        valid = _valid_keys(loc[:-1])
        near = difflib.get_close_matches(loc[-1], valid, n=1)
        hint = f"; did you mean {'.'.join(loc[:-1] + [near[0]])!r}?" if near else f"; valid keys: {', '.join(valid)}"
        return f"unknown key {where!r}{hint}"
    more = f" (and {len(err.errors()) - 1} more problem(s))" if len(err.errors()) > 1 else ""
    return f"{where}: {first['msg']}{more}"


def _valid_keys(loc: list[str]) -> list[str]:
    """Field names of the model at a location path (list indices skipped)."""
    model: type[BaseModel] = ExperimentConfig
    for part in loc:
        if part.isdigit():
            continue
        annotation = model.model_fields[part].annotation
        inner = _model_in(annotation)
        if inner is None:
            return []
        model = inner
    return sorted(model.model_fields)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def dump_config(config: ExperimentConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
