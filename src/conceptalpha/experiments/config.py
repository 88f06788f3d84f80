"""The experiment config: YAML → pydantic, validated at load.

A config names the data, concepts, features/label, segments, models, seeds,
trainer, backtest and output. ``--set key.path=value`` overrides are applied to
the raw mapping before validation, so an override is checked exactly like a
value in the file. Everything is typed: ``trainer`` is a
:class:`~conceptalpha.training.trainer.TrainerConfig`, ``backtest`` a
:class:`~conceptalpha.evaluation.backtest.BacktestConfig` and each model's
``params`` its registry schema, so a mistake anywhere fails at load, before any
data is read, in one line naming the key path, the value and what was expected
(the nearest valid key for an unknown one). docs/config.md is the reference.

``trainer`` and ``backtest`` keep only the keys the config sets (that is what
they dump to): a model's training settings are its registry's
``trainer_defaults``, then the top-level ``trainer``, then its own ``trainer``
(:meth:`ExperimentConfig.trainer_for`).
"""

from __future__ import annotations

import datetime as dt
import difflib
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from conceptalpha.errors import UserError
from conceptalpha.evaluation.backtest import BacktestConfig, lag_for_label
from conceptalpha.features.alpha import model_input_shape
from conceptalpha.models.registry import build_model, get_model_spec
from conceptalpha.training.trainer import TrainerConfig

SYNTHETIC = "synthetic"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _iso_date(value: Any) -> Any:
    """A YAML date (``2010-01-01`` unquoted) or an ISO date string → ``"YYYY-MM-DD"``."""
    if isinstance(value, dt.datetime):
        value = value.date()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value.strip()).isoformat()
        except ValueError as err:
            raise ValueError(f"not a date YYYY-MM-DD ({err})") from None
    return value


#: A calendar date, kept as its ISO string.
DateStr = Annotated[str, BeforeValidator(_iso_date)]


def _checked_by(check: Any, value: Any) -> Any:
    """``value`` if ``check(value)`` passes; its ``UserError`` as the ValueError pydantic reports under the key."""
    try:
        check(value)
    except UserError as err:
        raise ValueError(str(err)) from None
    return value


def _set_fields(section: BaseModel) -> dict[str, Any]:
    """The keys a config section sets (its defaults left out), JSON-ready."""
    return section.model_dump(mode="json", exclude_unset=True)


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
    start: DateStr | None = None
    end: DateStr | None = None
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

    _label_protocol = field_validator("label")(lambda value: _checked_by(lag_for_label, value))


def _ordered(span: tuple[str, str]) -> tuple[str, str]:
    if span[0] > span[1]:
        raise ValueError(f"starts {span[0]}, after it ends {span[1]}")
    return span


#: Inclusive [first, last] dates.
DateRange = Annotated[tuple[DateStr, DateStr], AfterValidator(_ordered)]


class Segments(Strict):
    train: DateRange
    valid: DateRange
    test: DateRange


class ModelEntry(Strict):
    """One model of the run. ``params`` holds only the hyper-parameters set here (checked against the
    model's registry schema at load); ``trainer`` overrides the top-level trainer for this model;
    ``features`` and ``label_norm``, where set, replace the run's for this model."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    features: Literal["alpha360", "alpha158"] | None = None
    label_norm: Literal["rank", "zscore"] | None = None

    _registered = field_validator("name")(lambda value: _checked_by(get_model_spec, value))

    @field_serializer("trainer")
    def _trainer_as_set(self, value: TrainerConfig) -> dict[str, Any]:
        return _set_fields(value)

    def resolved_params(self) -> dict[str, Any]:
        """Every hyper-parameter the model is built with: registry defaults updated with ``params``."""
        return get_model_spec(self.name).params_schema.model_validate(self.params).model_dump(mode="json")


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
    trainer: TrainerConfig = Field(default_factory=TrainerConfig, description="Training settings for every neural model.")
    backtest: BacktestConfig = Field(
        default_factory=BacktestConfig, description="Backtest settings; ``lag`` follows the label unless set."
    )
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

    @field_validator("models", "seeds")
    @classmethod
    def _not_empty(cls, value: list) -> list:
        if not value:
            raise ValueError("at least one is required")
        return value

    @model_validator(mode="after")
    def _check_params(self) -> "ExperimentConfig":
        """Each model's ``params`` against its registry schema, kept as the values it coerced to.

        Raised as a :class:`UserError` (already one explained line): pydantic would
        otherwise report the dynamic schema's error under the whole entry.
        """
        for k, entry in enumerate(self.models):
            schema = get_model_spec(entry.name).params_schema
            try:
                entry.params = _set_fields(schema.model_validate(entry.params))
            except ValidationError as err:
                raise UserError(_explain(err, schema, prefix=["models", str(k), "params"])) from None
            self._trial_build(k, entry)
        return self

    def _trial_build(self, k: int, entry: ModelEntry) -> None:
        """Build a neural model once for the config's input shape, so that a bad combination of its
        hyper-parameters (e.g. a width its head count does not divide) or a loss it does not train
        on stops the run at load."""
        spec = get_model_spec(entry.name)
        if spec.kind != "neural":
            return
        if spec.uses_market and not self.features.market_context:
            raise UserError(f"models.{k} ({entry.name}): reads the day's market vector; set features.market_context: true")
        feature_set, window, _ = self.data_for(entry)
        d_feat, seq_len = model_input_shape(feature_set, window)
        market = {"d_market": 1} if spec.uses_market else {}
        try:
            model = build_model(entry.name, d_feat=d_feat, seq_len=seq_len, **{**entry.params, **market})
        except UserError as err:
            raise UserError(f"models.{k} ({entry.name}): {err}") from None
        loss = self.trainer_for(entry, 0).loss
        if hasattr(model, "training_loss") and loss != "mse":
            raise UserError(f"models.{k} ({entry.name}): trains on its own loss; trainer.loss must be 'mse', got {loss!r}")

    @field_serializer("trainer", "backtest")
    def _section_as_set(self, value: BaseModel) -> dict[str, Any]:
        return _set_fields(value)

    @property
    def is_synthetic(self) -> bool:
        return self.data.provider == SYNTHETIC

    def data_for(self, entry: ModelEntry | None = None) -> tuple[str, int | None, str]:
        """(feature set, window, label normalisation) a model trains on: the entry's own feature set and
        label normalisation where set, else the run's; the window applies to Alpha158 only."""
        feature_set = (entry and entry.features) or self.features.feature_set
        window = self.features.window if feature_set == "alpha158" else None
        return feature_set, window, (entry and entry.label_norm) or self.features.label_norm

    def trainer_for(self, entry: ModelEntry, seed: int) -> TrainerConfig:
        """The training settings of one model and seed: registry defaults < ``trainer`` < the entry's ``trainer``."""
        spec = get_model_spec(entry.name)
        return TrainerConfig(**{**spec.trainer_defaults, **_set_fields(self.trainer), **_set_fields(entry.trainer), "seed": seed})

    def backtest_settings(self) -> BacktestConfig:
        """The backtest settings, ``lag`` following the label protocol unless the config sets it."""
        return BacktestConfig.for_label(self.features.label, **_set_fields(self.backtest))


# ---------------------------------------------------------------- loading


class _YamlLoader(yaml.SafeLoader):
    """``yaml.safe_load`` that leaves dates as written: the config checks them itself, so a bad
    month is reported against its key rather than as a YAML crash."""


_YamlLoader.add_constructor("tag:yaml.org,2002:timestamp", _YamlLoader.construct_yaml_str)


def _yaml(text: str) -> Any:
    return yaml.load(text, Loader=_YamlLoader)  # a SafeLoader: builds plain data only


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
        raw = _yaml(path.read_text(encoding="utf-8"))
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
    value = _yaml(text) if text.strip() else None
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
        raise UserError(f"{source}: {_explain(err, ExperimentConfig)}") from None
    except UserError as err:  # a model's params, explained where they were checked
        raise UserError(f"{source}: {err}") from None


def _explain(err: ValidationError, root: type[BaseModel], prefix: list[str] = ()) -> str:
    """The first problem in one line: key path, the value given, what was expected."""
    first = err.errors()[0]
    loc = [str(p) for p in first["loc"]]
    where = ".".join([*prefix, *loc]) or "(top level)"
    if first["type"] == "extra_forbidden":
        valid = _valid_keys(root, loc[:-1])
        near = difflib.get_close_matches(loc[-1], valid, n=1)
        path = [*prefix, *loc[:-1]]
        hint = f"did you mean {'.'.join(path + [near[0]])!r}?" if near else f"valid keys: {', '.join(valid)}"
        return f"unknown key {where!r} (= {_shown(first['input'])}); {hint}"
    more = f" (and {len(err.errors()) - 1} more problem(s))" if len(err.errors()) > 1 else ""
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "missing":
        return f"{where}: missing; this key is required{more}"
    return f"{where} = {_shown(first['input'])}: {message}{more}"


def _shown(value: Any) -> str:
    """A value as the user wrote it, cut to one short line."""
    text = repr(value) if not isinstance(value, dict) else yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    return text if len(text) <= 80 else text[:77] + "..."


def _valid_keys(root: type[BaseModel], loc: list[str]) -> list[str]:
    """Field names of the model at a location path below ``root`` (list indices skipped)."""
    model = root
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
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def dump_config(config: ExperimentConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def resolved_config(config: ExperimentConfig) -> dict[str, Any]:
    """The config with every default filled in: what ``--check`` prints.

    Each model shows every hyper-parameter and, for a neural model, every
    training setting it will use (``seed`` follows ``seeds``); the backtest
    shows its lag. Itself a valid config describing the same run.
    """
    out = config.model_dump(mode="json")
    for entry, shown in zip(config.models, out["models"]):
        shown["params"] = entry.resolved_params()
        if get_model_spec(entry.name).kind == "neural":
            shown["trainer"] = config.trainer_for(entry, config.seeds[0]).model_dump(mode="json", exclude={"seed"})
    out["backtest"] = config.backtest_settings().model_dump(mode="json")
    return out
