"""End-to-end runs on a tiny synthetic market: run, resume, rolling, grid, predict, CLI."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conceptalpha.errors import UserError
from conceptalpha.experiments.config import validate_config
from conceptalpha.experiments.grid import run_grid
from conceptalpha.experiments.jobs import expand_jobs, windows
from conceptalpha.experiments.orchestrate import run_experiment
from conceptalpha.experiments.predict import predict_date

TINY = {
    "name": "tiny",
    "data": {"provider": "synthetic", "synthetic": {"seed": 3, "n_stocks": 30, "n_years": 2}},
    "concepts": {"min_members": 2},
    "segments": {"train": ["2010-01-01", "2010-09-30"], "valid": ["2010-10-01", "2010-12-31"], "test": ["2011-01-01", "2011-03-31"]},
    "models": [{"name": "GRU", "params": {"hidden_size": 8, "num_layers": 1}}],
    "trainer": {"max_epochs": 2, "patience": 2, "lr": 0.001, "show_progress": False},
    "seeds": [0],
}


def tiny(**changes) -> dict:
    raw = json.loads(json.dumps(TINY))
    raw.update(changes)
    return raw


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    cfg = validate_config(tiny(models=[{"name": "HIST", "params": {"hidden_size": 8, "num_layers": 1}}, {"name": "GRU", "params": {"hidden_size": 8, "num_layers": 1}}]))
    run_experiment(cfg, out_dir=out, progress=False)
    return out


def test_a_model_entry_trains_on_its_own_label_normalisation(tmp_path):
    def lightgbm_scores(entry: dict, label_norm: str) -> pd.Series:
        out = tmp_path / f"{label_norm}-{len(entry)}"
        run_experiment(validate_config(tiny(models=[entry], features={"label_norm": label_norm})), out_dir=out, progress=False)
        return pd.read_parquet(out / "predictions.parquet")["score"]

    own = lightgbm_scores({"name": "LightGBM", "label_norm": "rank"}, "zscore")
    pd.testing.assert_series_equal(own, lightgbm_scores({"name": "LightGBM"}, "rank"))
    assert not own.equals(lightgbm_scores({"name": "LightGBM"}, "zscore"))


def test_run_writes_the_documented_layout(finished_run):
    for name in ("config.yaml", "run.log", "predictions.parquet", "explanations.parquet", "metrics.json", "report.html", "results.md"):
        assert (finished_run / name).exists(), name
    preds = pd.read_parquet(finished_run / "predictions.parquet")
    assert {"datetime", "instrument", "model", "seed", "segment", "score", "label"} <= set(preds.columns)
    assert set(preds["segment"]) == {"valid", "test"}
    assert preds["score"].notna().all()
    metrics = json.loads((finished_run / "metrics.json").read_text())
    for model in ("HIST", "GRU"):
        m = metrics["models"][model]
        for key in ("IC", "ICIR", "RankIC", "RankICIR", "precision@30"):
            assert set(m["test"][key]) == {"mean", "std"}
        for key in ("cumulative_return", "annual_return", "information_ratio", "max_drawdown"):
            assert key in m["backtest"]
        assert m["train_seconds"] > 0
    # the synthetic market's oracle is the ceiling; two epochs learn some of it (measured: 0.117 vs 0.054, 0.053)
    assert metrics["oracle"]["test"]["IC"] > max(metrics["models"][m]["test"]["IC"]["mean"] for m in ("HIST", "GRU")) > 0.02


def test_hist_explanations_add_up(finished_run):
    ex = pd.read_parquet(finished_run / "explanations.parquet")
    preds = pd.read_parquet(finished_run / "predictions.parquet")
    hist = preds[(preds["model"] == "HIST") & (preds["segment"] == "test")]
    merged = hist.merge(ex, on=["datetime", "instrument"], suffixes=("", "_ex"))
    assert len(merged) == len(hist)
    parts = merged["part_predefined"] + merged["part_hidden"] + merged["part_individual"] + merged["bias"]
    assert (parts - merged["score"]).abs().max() < 1e-4


def test_run_predictions_equal_the_trained_models_own(finished_run):
    """Validation scores come from training's last pass and HIST's test scores from its explanations."""
    import torch

    from conceptalpha.experiments.runner import build_neural_model, build_window_dataset, load_inputs
    from conceptalpha.training import predict

    cfg = validate_config(yaml_load(finished_run / "config.yaml"))
    inputs = load_inputs(cfg)
    job = expand_jobs(cfg)[0]
    dataset = build_window_dataset(inputs, cfg, job.segment_dates)
    preds = pd.read_parquet(finished_run / "predictions.parquet")
    for entry in cfg.models:
        model = build_neural_model(entry, dataset)
        model.load_state_dict(torch.load(finished_run / "models" / entry.name / "seed0" / "best.pt", weights_only=True))
        membership = inputs.membership if entry.name == "HIST" else None
        for segment in ("valid", "test"):
            got = preds[(preds["model"] == entry.name) & (preds["segment"] == segment)]
            expected = predict(model, dataset, segment, membership=membership)
            pd.testing.assert_frame_equal(got[list(expected.columns)].reset_index(drop=True), expected, check_exact=True)


def test_rerun_with_same_config_reuses_results(finished_run):
    before = pd.read_parquet(finished_run / "predictions.parquet")
    cfg = validate_config(yaml_load(finished_run / "config.yaml"))
    run_experiment(cfg, out_dir=finished_run, resume=True, progress=False)
    after = pd.read_parquet(finished_run / "predictions.parquet")
    pd.testing.assert_frame_equal(before, after)


def test_existing_run_needs_resume(finished_run):
    cfg = validate_config(yaml_load(finished_run / "config.yaml"))
    with pytest.raises(UserError, match="--resume"):
        run_experiment(cfg, out_dir=finished_run, progress=False)


def test_resume_continues_from_checkpoint_to_the_same_predictions(finished_run, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(finished_run, copy)
    job = copy / "models" / "GRU" / "seed0"
    (job / "predictions.parquet").unlink()  # as if killed after its last checkpoint
    cfg = validate_config(yaml_load(finished_run / "config.yaml"))
    run_experiment(cfg, out_dir=copy, resume=True, progress=False)
    before = pd.read_parquet(finished_run / "predictions.parquet")
    after = pd.read_parquet(copy / "predictions.parquet")
    pd.testing.assert_frame_equal(before, after)


def test_other_config_in_same_dir_is_refused(finished_run):
    cfg = validate_config(tiny(seeds=[7]))
    with pytest.raises(UserError, match="different config"):
        run_experiment(cfg, out_dir=finished_run, progress=False)


@pytest.mark.slow
def test_same_seed_reproduces_predictions(finished_run, tmp_path):
    cfg = validate_config(yaml_load(finished_run / "config.yaml"))
    run_experiment(cfg, out_dir=tmp_path / "again", progress=False)
    a = pd.read_parquet(finished_run / "predictions.parquet")
    b = pd.read_parquet(tmp_path / "again" / "predictions.parquet")
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.slow
def test_jobs_in_worker_processes_give_the_serial_predictions(finished_run, tmp_path):
    raw = yaml_load(finished_run / "config.yaml")
    cfg = validate_config({**raw, "workers": 2})
    run_experiment(cfg, out_dir=tmp_path / "parallel", progress=False)
    serial = pd.read_parquet(finished_run / "predictions.parquet")
    parallel = pd.read_parquet(tmp_path / "parallel" / "predictions.parquet")
    pd.testing.assert_frame_equal(serial, parallel)
    log = (tmp_path / "parallel" / "run.log").read_text()
    assert "2 worker processes" in log
    for model in ("HIST", "GRU"):  # each worker's epochs reach the parent's log while it trains
        assert re.search(rf"{model} seed 0 epoch 2/2: train loss \d\.\d{{4}}, valid IC -?\d\.\d{{4}}, [\d.]+ s, best -?\d\.\d{{4}} \(epoch [12]\)", log)


def test_predict_writes_ranked_list_with_explanations(finished_run, tmp_path):
    preds = pd.read_parquet(finished_run / "predictions.parquet")
    date = str(pd.Timestamp(preds.loc[preds["segment"] == "test", "datetime"].max()).date())
    path = predict_date(finished_run, date, model="HIST", out=tmp_path / "ranked.csv")
    ranked = pd.read_csv(path)
    assert list(ranked["rank"]) == list(range(1, len(ranked) + 1))
    assert ranked["score"].is_monotonic_decreasing
    assert {"part_predefined", "part_hidden", "part_individual", "top_concepts"} <= set(ranked.columns)
    day = preds[(preds["model"] == "HIST") & (pd.to_datetime(preds["datetime"]) == pd.Timestamp(date))]
    expected = day.set_index("instrument")["score"]
    got = ranked.set_index("instrument")["score"]
    assert (got - expected.reindex(got.index)).abs().max() < 1e-5
    with pytest.raises(UserError, match="no model"):
        predict_date(finished_run, date, model="TRA")


@pytest.mark.slow
def test_rolling_windows_make_one_continuous_test_series(tmp_path):
    raw = tiny(
        segments={"train": ["2010-01-01", "2010-06-30"], "valid": ["2010-07-01", "2010-09-30"], "test": ["2010-10-01", "2011-03-31"]},
        rolling={"enabled": True, "step_months": 3, "train_months": 6, "valid_months": 3},
    )
    cfg = validate_config(raw)
    wins = windows(cfg)
    assert [w["test"] for w in wins] == [("2010-10-01", "2010-12-31"), ("2011-01-01", "2011-03-31")]
    assert wins[1]["train"] == ("2010-04-01", "2010-09-30") and wins[1]["valid"] == ("2010-10-01", "2010-12-31")
    result = run_experiment(cfg, out_dir=tmp_path / "roll", progress=False)
    preds = pd.read_parquet(tmp_path / "roll" / "predictions.parquet")
    test = preds[preds["segment"] == "test"]
    assert set(test["window"]) == {0, 1}
    assert not test.duplicated(["datetime", "instrument", "model", "seed"]).any()
    assert pd.to_datetime(test["datetime"]).min() >= pd.Timestamp("2010-10-01")
    assert result.metrics["models"]["GRU"]["test"]["IC"]["mean"] == result.metrics["models"]["GRU"]["test"]["IC"]["mean"]


@pytest.mark.slow
def test_grid_on_local_ray_runs_two_jobs_and_skips_finished(tmp_path):
    pytest.importorskip("ray")
    cfg_path = tmp_path / "grid.yaml"
    cfg_path.write_text(json.dumps(tiny(seeds=[0, 1])))  # JSON is YAML
    table = run_grid(cfg_path, out_dir=tmp_path / "grid", executor="ray", max_parallel=2)
    assert sorted(table["job"]) == ["GRU-seed0-csi300-w0", "GRU-seed1-csi300-w0"]
    assert (tmp_path / "grid" / "grid_results.md").exists()
    again = run_grid(cfg_path, out_dir=tmp_path / "grid", executor="local")
    pd.testing.assert_frame_equal(table, again)


def test_grid_reports_a_failed_job_and_continues(tmp_path, capsys):
    raw = tiny(models=[{"name": "GRU", "params": {"hidden_size": 8, "num_layers": 1}}, {"name": "LightGBM", "params": {"num_leaves": 1}}])  # LightGBM refuses it when training
    cfg_path = tmp_path / "grid.yaml"
    cfg_path.write_text(json.dumps(raw))
    jobs = expand_jobs(validate_config(raw))
    assert [job.id for job in jobs] == ["GRU-seed0-csi300-w0", "LightGBM-seed0-csi300-w0"]
    table = run_grid(cfg_path, out_dir=tmp_path / "g", executor="serial")
    assert list(table["model"]) == ["GRU"]
    assert "FAILED" in capsys.readouterr().out
    assert "num_leaves" in (tmp_path / "g" / "models" / "LightGBM" / "seed0" / "error.txt").read_text()


def test_jobs_of_a_grid_cover_every_coordinate_in_their_own_directories():
    raw = tiny(
        seeds=[0, 1],
        grid={"universes": ["csi300", "csi100"], "windows": [TINY["segments"], {**TINY["segments"], "test": ["2011-04-01", "2011-06-30"]}]},
        rolling={"enabled": True, "step_months": 2, "train_months": 6, "valid_months": 3},
    )
    jobs = expand_jobs(validate_config(raw))
    assert len(jobs) == 2 * 2 * 2 * 2  # universes × periods × rolling windows × seeds (one model)
    assert len({job.dir_parts for job in jobs}) == len(jobs)
    assert jobs[0].dir_parts == ("GRU", "seed0", "csi300", "period0", "window0")
    assert jobs[-1].id == "GRU-seed1-csi100-w1-r1" and jobs[-1].cell == "GRU-seed1-csi100-w1"
    assert jobs[-1].segment_dates["test"] == ("2011-06-01", "2011-06-30")
    with pytest.raises(UserError, match="conceptalpha grid"):
        run_experiment(validate_config(raw), progress=False)


@pytest.mark.slow
def test_cli_run_with_unknown_key_is_one_line_exit_2(tmp_path):
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(json.dumps(tiny()))
    proc = subprocess.run(
        [sys.executable, "-m", "conceptalpha.experiments.cli", "run", str(cfg_path), "--set", "trainer_x.lr=1"],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "unknown key 'trainer_x'" in proc.stderr


def yaml_load(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())
