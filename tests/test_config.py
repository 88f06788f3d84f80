import pytest

from conceptalpha.errors import UserError
from conceptalpha.experiments.config import apply_override, load_config, validate_config

BASE = {
    "name": "t",
    "segments": {"train": ["2020-01-01", "2020-06-30"], "valid": ["2020-07-01", "2020-09-30"], "test": ["2020-10-01", "2020-12-31"]},
    "models": ["GRU"],
}


def test_minimal_config_validates_with_defaults():
    cfg = validate_config(dict(BASE))
    assert cfg.models[0].name == "GRU"
    assert cfg.features.label == "t+1->t+2"
    assert cfg.is_synthetic


def test_unknown_key_names_the_nearest_valid_one():
    raw = {**BASE, "feautres": {"label": "t->t+1"}}
    with pytest.raises(UserError, match=r"unknown key 'feautres'; did you mean 'features'"):
        validate_config(raw)
    raw = {**BASE, "data": {"univrse": "csi300"}}
    with pytest.raises(UserError, match=r"did you mean 'data.universe'"):
        validate_config(raw)


def test_unknown_model_is_an_error():
    with pytest.raises(UserError, match="HITS"):
        validate_config({**BASE, "models": ["HITS"]})


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


def test_bad_override_syntax_and_bad_values():
    with pytest.raises(UserError, match="key.path=value"):
        apply_override({}, "novalue")
    with pytest.raises(UserError, match="data.synthetic.n_stocks"):
        validate_config({**BASE, "data": {"synthetic": {"n_stocks": "many"}}})


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
