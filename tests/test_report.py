"""The run report: self-contained HTML, every figure present, and a real headless-browser check."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from conceptalpha.data.calendar import Calendar
from conceptalpha.data.panel import BarPanel, Market
from conceptalpha.data.universe import Universe
from conceptalpha.errors import UserError
from conceptalpha.evaluation.backtest import BacktestConfig, backtest
from conceptalpha.evaluation.report import comparison_table, render_report
from conceptalpha.experiments.run_report import build_report

MODELS = ("HIST", "GRU")
SEEDS = (0, 1)


def tiny_run(days: int = 200, n: int = 30) -> dict:
    """Predictions (valid+test) of two models × two seeds on a random market, their backtests and HIST parts."""
    rng = np.random.default_rng(7)
    dates = pd.bdate_range("2019-06-03", periods=days)
    names = np.array([f"SH60{i:04d}" for i in range(n)], dtype=object)
    returns = rng.normal(0.0003, 0.02, size=(days, n))
    close = 10 * np.cumprod(1 + returns, axis=0)
    calendar = Calendar(dates)
    market = Market(
        BarPanel(calendar, names, {"close": close.astype(np.float32), "volume": np.ones((days, n), np.float32)}),
        Universe.everything("u", calendar, names),
        names,
        benchmark=pd.Series(3000 * np.cumprod(1 + rng.normal(0.0002, 0.01, days)), index=dates),
    )
    label = np.full((days, n), np.nan)
    label[:-2] = close[2:] / close[1:-1] - 1  # t+1 -> t+2
    frames, backtests = [], {}
    for m, model in enumerate(MODELS):
        for seed in SEEDS:
            score = 0.3 * (m + 1) * np.nan_to_num(label) + rng.normal(0, 0.02, size=(days, n))
            frame = pd.DataFrame(
                {"datetime": np.repeat(dates, n), "instrument": np.tile(names, days), "score": score.ravel(), "label": label.ravel()}
            ).assign(model=model, seed=seed, segment=np.where(np.repeat(dates, n) < dates[60], "valid", "test"))
            frames.append(frame)
            test = frame[frame["segment"] == "test"]
            backtests[f"{model}_seed{seed}"] = backtest(test, market, BacktestConfig(topk=5)).daily
    predictions = pd.concat(frames, ignore_index=True)
    test_hist = predictions[(predictions["model"] == "HIST") & (predictions["segment"] == "test")]
    parts = rng.normal(size=(len(test_hist), 3)) * [0.5, 0.3, 0.2]
    explanations = test_hist[["datetime", "instrument", "model", "seed"]].assign(
        part_predefined=parts[:, 0], part_hidden=parts[:, 1], part_individual=parts[:, 2]
    )
    return {"predictions": predictions, "backtests": backtests, "explanations": explanations}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    run = tiny_run()
    root = tmp_path_factory.mktemp("run")
    run["predictions"].to_parquet(root / "predictions.parquet")
    concepts = np.array(["银行", "5G", "新能源汽车"], dtype=object)
    run["explanations"].assign(top_concept=concepts[np.arange(len(run["explanations"])) % 3]).to_parquet(root / "explanations.parquet")
    for key, daily in run["backtests"].items():
        daily.to_parquet(root / f"backtest_{key}.parquet")
    (root / "config.yaml").write_text(yaml.safe_dump({"name": "tiny", "features": {"label": "t+1->t+2"}}))
    build_report(root)
    return root


EXPECTED_FIGURES = {
    "all_cumulative_ic", "all_cumulative_excess",
    *(f"{m}_{kind}" for m in MODELS for kind in ("cumulative_return", "drawdown", "daily_ic", "ic_by_year", "quantiles", "turnover")),
    "HIST_prediction_parts", "HIST_concepts",
}


def test_report_is_self_contained_with_every_figure(run_dir):
    page = (run_dir / "report.html").read_text("utf-8")
    assert not re.search(r"(?:src|href)\s*=\s*[\"']?(?:https?:)?//", page), "the page references an external resource"
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page
    ids = set(re.findall(r'<figure id="([^"]+)"><img alt="[^"]*" src="data:image/png;base64,', page))
    assert ids == EXPECTED_FIGURES
    assert {p.stem for p in (run_dir / "figures").glob("*.png")} == EXPECTED_FIGURES
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in (run_dir / "figures").glob("*.png"))
    assert "银行" in page  # concept names are listed in the HTML legend
    assert "Label protocol: t+1-&gt;t+2" in page


def test_comparison_markdown_has_mean_and_std_over_seeds(run_dir):
    table = (run_dir / "comparison.md").read_text("utf-8")
    lines = table.strip().splitlines()
    assert lines[0].startswith("| model | seeds | IC |")
    assert len(lines) == 2 + len(MODELS)
    assert all("±" in line for line in lines[2:])


def test_comparison_table_by_hand():
    metrics = {"A": {0: {"IC": 0.01, "net_max_drawdown": -0.1}, 1: {"IC": 0.03, "net_max_drawdown": -0.3}}, "B": {0: {"IC": 0.02}}}
    table = comparison_table(metrics, {"IC": "IC", "net_max_drawdown": "DD"})
    assert "| A | 2 | 0.0200 ± 0.0141 | -20.00% ± 14.14% |" in table
    assert "| B | 1 | 0.0200 | – |" in table


def test_bad_run_dir_names_what_is_missing(tmp_path):
    with pytest.raises(UserError, match="predictions.parquet is missing"):
        build_report(tmp_path)
    with pytest.raises(UserError, match="does not exist"):
        build_report(tmp_path / "nope")
    (tmp_path / "predictions.parquet").write_text("not parquet")
    with pytest.raises(UserError, match="parquet"):
        build_report(tmp_path)


def test_concept_influence_from_the_top_concept_column(tmp_path):
    run = tiny_run(days=80, n=12)
    explanations = run["explanations"].assign(top_concept=np.where(np.arange(len(run["explanations"])) % 3 == 0, "白酒", "5G"))
    from conceptalpha.evaluation.report import concept_weights_from_explanations

    weights = concept_weights_from_explanations(explanations)
    weights = weights[weights["seed"] == 0]
    day = weights[weights["datetime"] == weights["datetime"].iloc[0]].set_index("concept")["weight"]
    assert day.sum() == pytest.approx(1.0)
    assert day["白酒"] == pytest.approx(4 / 12)  # rows 0, 3, 6, 9 of the first day
    page = render_report(tmp_path, run["predictions"], {}, explanations, "t", []).read_text("utf-8")
    assert 'id="HIST_concepts"' in page and "白酒" in page


def test_render_report_without_backtests_or_explanations(tmp_path):
    predictions = tiny_run(days=80, n=12)["predictions"]
    path = render_report(tmp_path, predictions[predictions["model"] == "GRU"], {}, None, "t", ["a note"])
    page = path.read_text("utf-8")
    assert "GRU_daily_ic" in page and "cumulative_return" not in page and "a note" in page


def test_cli_report_rebuilds_the_same_report_and_prints_its_path(run_dir):
    from conceptalpha.experiments.cli import app

    first = (run_dir / "report.html").read_bytes()
    result = CliRunner().invoke(app, ["report", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert str(run_dir / "report.html") in result.output
    assert (run_dir / "report.html").read_bytes() == first


def test_cli_report_on_a_bad_dir_is_a_one_line_error(tmp_path):
    result = subprocess.run(
        [str(Path(__file__).resolve().parents[1] / ".venv" / "bin" / "conceptalpha"), "report", str(tmp_path)],
        capture_output=True, text=True,
    ) if (Path(__file__).resolve().parents[1] / ".venv" / "bin" / "conceptalpha").exists() else pytest.skip("no console script")
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error:") and "predictions.parquet" in result.stderr
    assert "Traceback" not in result.stderr


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000",
]
# Injected into a copy of the page: after load, it records which images failed to decode.
_PROBE = (
    "<script>window.addEventListener('load',function(){var bad=[];"
    "document.querySelectorAll('img').forEach(function(i){if(!(i.complete&&i.naturalWidth>0))bad.push(i.parentNode.id);});"
    "document.body.setAttribute('data-images',document.images.length);document.body.setAttribute('data-broken',bad.join(','));});</script>"
)


def _chromium(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    profile = tmp_path / "profile"
    return subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_report_in_headless_chromium(run_dir, tmp_path):
    page = run_dir / "report.html"
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text("utf-8").replace("</body>", _PROBE + "</body>"), "utf-8")
    dom = _chromium(["--dump-dom", probe.as_uri()], tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert f'data-images="{len(EXPECTED_FIGURES)}"' in dom.stdout
    assert 'data-broken=""' in dom.stdout
    shot = run_dir / "report_screenshot.png"
    screenshot = _chromium([f"--screenshot={shot}", "--window-size=1200,2600", page.as_uri()], tmp_path)
    assert screenshot.returncode == 0, screenshot.stderr[-2000:]
    assert shot.exists() and shot.stat().st_size > 10_000
    console_errors = [line for line in (dom.stderr + screenshot.stderr).splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert console_errors == []
