import json

import pytest

from conceptalpha.errors import UserError
from conceptalpha.experiments.config import ExperimentConfig, apply_override, load_config, resolved_config, validate_config
from conceptalpha.models.registry import get_model_spec
from conceptalpha.training.trainer import TrainerConfig

BASE = {
    "name": "t",
    "segments": {"train": ["2020-01-01", "2020-06-30"], "valid": ["2020-07-01", "2020-09-30"], "test": ["2020-10-01", "2020-12-31"]},
    "models": ["GRU"],
}


def test_a_config_file_with_unquoted_dates_and_a_set_override_validates(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "segments:\n  train: [2020-01-01, 2020-06-30]\n  valid: [2020-07-01, 2020-09-30]\n"
        "  test: [2020-10-01, 2020-12-31]\nmodels: [GRU]\n"
    )
    cfg = load_config(path, ["segments.train=[2019-01-02,2020-06-30]", "data.start=2018-01-01"])
    assert cfg.segments.train == ("2019-01-02", "2020-06-30")
    assert cfg.segments.test == ("2020-10-01", "2020-12-31")
    assert cfg.data.start == "2018-01-01"


def test_unknown_key_names_the_nearest_valid_one():
    raw = {**BASE, "feautres": {"label": "t->t+1"}}
    with pytest.raises(UserError, match=r"unknown key 'feautres' \(= \{label: t->t\+1\}\); did you mean 'features'"):
        validate_config(raw)
    raw = {**BASE, "data": {"univrse": "csi300"}}
    with pytest.raises(UserError, match=r"did you mean 'data.universe'"):
        validate_config(raw)


@pytest.mark.parametrize(
    "override, message",
    [
        ("trainer.lrr=0.1", r"unknown key 'trainer.lrr' \(= 0.1\); did you mean 'trainer.lr'\?"),
        ("trainer.lr=-1", r"trainer.lr = -1: Input should be greater than 0"),
        ("models=[{name: GRU, trainer: {max_epoch: 3}}]", r"did you mean 'models.0.trainer.max_epochs'\?"),
        ("models=[{name: GRU, params: {hiden_size: 8}}]", r"unknown key 'models.0.params.hiden_size' \(= 8\); did you mean 'models.0.params.hidden_size'\?"),
        ("models=[GRU, {name: HIST, params: {hidden_size: many}}]", r"models.1.params.hidden_size = 'many': Input should be a valid integer"),
        ("models=[{name: HIST, params: {base_model: RNN}}]", r"models.0.params.base_model = 'RNN': Input should be 'GRU' or 'LSTM'"),
        ("models=[{name: LightGBM, params: {num_leavs: 8}}]", r"models.0.params = .*unknown LightGBM parameter 'num_leavs'; did you mean 'num_leaves'\?"),
        ("models=[{name: HISTT}]", r"models.0.name = 'HISTT': unknown model 'HISTT'; did you mean 'HIST'\?"),
        ("backtest.tpok=3", r"unknown key 'backtest.tpok' \(= 3\); did you mean 'backtest.topk'\?"),
        ("backtest.strategy=top", r"backtest.strategy = 'top': Input should be 'topk' or 'topk_dropout'"),
        ("segments.train=[2012-13-01,2012-12-31]", r"segments.train.0 = '2012-13-01': not a date YYYY-MM-DD \(month must be in 1..12\)"),
        ("segments.train=[2020-06-30,2020-01-01]", r"segments.train = .*starts 2020-06-30, after it ends 2020-01-01"),
        ("data.end=2020-02-30", r"data.end = '2020-02-30': not a date"),
        ("features.label=t+2->t+1", r"features.label = 't\+2->t\+1': label 't\+2->t\+1' is not of the form"),
        ("seeds=[]", r"seeds = \[\]: at least one is required"),
        ("rolling.modee=fixed", r"did you mean 'rolling.mode'\?"),
        ("trainer.loss=rank", r"trainer.loss = 'rank': Input should be 'mse' or 'ic'"),
        ("models=[{name: MASTER}]", r"models.0 \(MASTER\): reads the day's market vector; set features.market_context: true"),
        ("models=[{name: GRU, features: alpha158}]", r"models.0 \(GRU\): model GRU needs sequence features"),
        ("models=[GRU, {name: HIST, params: {K: 0}}]", r"models.1 \(HIST\): HIST K must be ≥ 1, got 0"),
        ("models=[{name: TRA, trainer: {loss: ic}}]", r"models.0 \(TRA\): trains on its own loss; trainer.loss must be 'mse', got 'ic'"),
    ],
)
def test_every_mistake_is_one_line_naming_key_value_and_expectation(tmp_path, override, message):
    path = tmp_path / "c.yaml"
    path.write_text(json.dumps(BASE))
    with pytest.raises(UserError, match=message) as err:
        load_config(path, [override])
    assert "\n" not in str(err.value) and str(err.value).startswith(f"{path}: ")


def test_a_models_training_settings_layer_registry_defaults_top_level_and_its_own():
    cfg = validate_config(
        {**BASE, "models": ["GRU", {"name": "HIST", "trainer": {"patience": 7}}], "trainer": {"max_epochs": 9}}
    )
    gru, hist = cfg.models
    assert get_model_spec("GRU").trainer_defaults["lr"] != TrainerConfig().lr  # else the layering is not seen
    gru_cfg, hist_cfg = cfg.trainer_for(gru, seed=4), cfg.trainer_for(hist, seed=5)
    assert (gru_cfg.lr, gru_cfg.max_epochs, gru_cfg.patience, gru_cfg.seed) == (
        get_model_spec("GRU").trainer_defaults["lr"], 9, get_model_spec("GRU").trainer_defaults["patience"], 4)
    assert (hist_cfg.lr, hist_cfg.max_epochs, hist_cfg.patience, hist_cfg.seed) == (TrainerConfig().lr, 9, 7, 5)


def test_json_round_trip_keeps_every_models_settings():
    """Workers receive ``model_dump_json``: a top-level trainer must not turn into explicit defaults
    that would override the registry's per-model ones."""
    cfg = validate_config({**BASE, "models": ["GRU", "HIST", {"name": "LightGBM", "params": {"min_data_in_leaf": 3}}],
                           "trainer": {"max_epochs": 9}, "backtest": {"topk": 5}})
    again = ExperimentConfig.model_validate_json(cfg.model_dump_json())
    assert again == cfg
    for before, after in zip(cfg.models, again.models):
        assert again.trainer_for(after, 1) == cfg.trainer_for(before, 1)
        assert after.resolved_params() == before.resolved_params()
    assert again.backtest_settings() == cfg.backtest_settings()
    assert again.models[2].resolved_params()["min_data_in_leaf"] == 3


def test_params_are_kept_as_the_values_they_validate_to():
    cfg = validate_config({**BASE, "models": [{"name": "TRA", "params": {"tau": 2, "num_states": "4"}}]})
    assert cfg.models[0].params == {"tau": 2.0, "num_states": 4}
    assert isinstance(cfg.models[0].params["tau"], float)


def test_backtest_lag_follows_the_label_unless_set():
    assert validate_config({**BASE, "features": {"label": "t->t+1"}}).backtest_settings().lag == 0
    assert validate_config({**BASE, "features": {"label": "t+1->t+2"}}).backtest_settings().lag == 1
    assert validate_config({**BASE, "features": {"label": "t->t+1"}, "backtest": {"lag": 2}}).backtest_settings().lag == 2


def test_the_resolved_config_is_a_config_of_the_same_run():
    cfg = validate_config({**BASE, "models": ["GRU", {"name": "HIST", "params": {"K": 2}}, "LightGBM"],
                           "trainer": {"max_epochs": 9}, "features": {"label": "t->t+1"}})
    shown = resolved_config(cfg)
    assert shown["models"][1]["params"]["K"] == 2 and shown["models"][1]["params"]["hidden_size"] == 64
    assert shown["models"][0]["trainer"]["lr"] == get_model_spec("GRU").trainer_defaults["lr"]
    assert shown["backtest"]["lag"] == 0
    again = validate_config(shown)
    for before, after in zip(cfg.models, again.models):
        assert again.trainer_for(after, 3) == cfg.trainer_for(before, 3)
        assert after.resolved_params() == before.resolved_params()
    assert again.backtest_settings() == cfg.backtest_settings()


def test_set_overrides_nested_values_and_models_by_name():
    raw = dict(BASE)
    apply_override(raw, "features.label=t->t+1")
    apply_override(raw, "seeds=[1, 2]")
    apply_override(raw, "models=HIST,GRU")
    apply_override(raw, "data.synthetic.n_stocks=50")
    cfg = validate_config(raw)
    assert cfg.features.label == "t->t+1"
    assert cfg.seeds == [1, 2]
    assert [m.name for m in cfg.models] == ["HIST", "GRU"]
    assert cfg.data.synthetic.n_stocks == 50


def test_bad_override_syntax():
    with pytest.raises(UserError, match="key.path=value"):
        apply_override({}, "novalue")
    with pytest.raises(UserError, match="'seeds' is not a section"):
        apply_override({"seeds": [1]}, "seeds.x=1")


def test_concept_sources_accept_kind_colon_path():
    cfg = validate_config({**BASE, "concepts": {"sources": ["tushare_concepts:/x/a.csv", {"kind": "table", "path": "b.csv"}]}})
    assert [(s.kind, s.path) for s in cfg.concepts.sources] == [("tushare_concepts", "/x/a.csv"), ("table", "b.csv")]


def test_load_config_file_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(UserError, match="mapping"):
        load_config(listy)


def test_yaml_is_loaded_safely(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("name: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(evil)


@pytest.mark.parametrize("name", ["demo", "csi300_hist", "csi300_paper", "csi100_hist", "zoo", "csi300_master", "csi300_master_common"])
def test_shipped_configs_validate(name):
    from pathlib import Path

    config = load_config(Path(__file__).parents[1] / "configs" / f"{name}.yaml", [])
    assert config.models and config.segments.train[0] < config.segments.test[0]


def _no_run(*args, **kwargs):
    raise AssertionError("the experiment must not start")


@pytest.mark.parametrize("command", ["run", "grid"])
def test_cli_check_prints_the_resolved_config_and_runs_nothing(tmp_path, monkeypatch, capsys, command):
    import yaml

    from cli_helpers import run

    monkeypatch.setattr("conceptalpha.experiments.orchestrate.run_experiment", _no_run)
    monkeypatch.setattr("conceptalpha.experiments.grid.run_grid", _no_run)
    path = tmp_path / "c.yaml"
    path.write_text(json.dumps(BASE))
    code, out, _ = run([command, path, "--check", "--set", "segments.train=[2019-06-03,2020-06-30]"], monkeypatch, capsys)
    assert code == 0
    shown = yaml.safe_load(out)
    assert shown["segments"]["train"] == ["2019-06-03", "2020-06-30"]
    assert shown["models"][0]["trainer"]["lr"] == get_model_spec("GRU").trainer_defaults["lr"]
    assert not list(tmp_path.glob("runs*")) and not (tmp_path / ".cache").exists()


def test_cli_trainer_typo_fails_in_one_line_before_the_run_starts(tmp_path, monkeypatch, capsys):
    from cli_helpers import run

    monkeypatch.setattr("conceptalpha.experiments.orchestrate.run_experiment", _no_run)
    path = tmp_path / "c.yaml"
    path.write_text(json.dumps(BASE))
    code, out, err = run(["run", path, "--set", "trainer.lrr=0.1"], monkeypatch, capsys)
    assert code == 2
    assert err == f"error: {path}: unknown key 'trainer.lrr' (= 0.1); did you mean 'trainer.lr'?\n"
