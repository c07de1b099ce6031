"""The seed's Base-vs-Large table from measured candidate rows, its re-rendering from a sweep's files, and a
Pareto plot whose labels do not collide on a crowded front."""

from __future__ import annotations

import itertools
import json
import re

import pytest

from tests.experiments.test_pareto import brute_front
from w2vc.experiments import pareto as P
from w2vc.experiments.config import parse_config
from w2vc.experiments.seed_reference import SEED_REFERENCE

# deterministic on the fixtures: the Base-style tiny model has fewer parameters (no conv bias, one norm layer)
BUDGETS = ["params_m < 1 x teacher", "size_mb <= 16"]


def _cfg(corpus, teacher, student):
    return parse_config({
        "name": "seed-table", "teacher": str(teacher), "student": str(student), "data": {"corpus": str(corpus)},
        "eval": {"sets": ["clean", "snr10"], "limit": 2, "threads": 1, "seconds": [3], "processes": 1},
        "objectives": ["wer_clean", "latency_p50_ms", "size_mb"], "budgets": BUDGETS,
        "candidates": [{"name": "teacher", "from": "teacher"}, {"name": "student-scratch", "from": "student"}]})


@pytest.fixture(scope="module")
def measured(tiny_corpus, tiny_layer_model, tiny_group_model):
    """Both tiny models measured as the sweep measures a candidate: WER (clean, snr10) + cost at 3 s."""
    from w2vc.eval.cost import CostConfig
    from w2vc.eval.evaluate import evaluate_model
    from w2vc.eval.measure import measure_cost

    cost_cfg = CostConfig(seconds=(3.0,), threads=1, warmup=1, repeats=3, min_repeats=3, count_flops=False)
    recs = {}
    for name, path in (("teacher", tiny_layer_model), ("student-scratch", tiny_group_model)):
        ev = evaluate_model(path, tiny_corpus, noisy=True, limit=2, threads=1)
        cost = measure_cost(str(path), cfg=cost_cfg, name=name)
        recs[name] = {"name": name, "key": f"k-{name}", "artifact": str(path), "timed": True, "lineage": [],
                      "recipe": [], "metrics": {**ev.metrics, **cost.metrics()}, "texts": ev.text_artifacts()}
    return _cfg(tiny_corpus, tiny_layer_model, tiny_group_model), recs


def _table(report: str) -> dict[str, list[str]]:
    """The seed section's rows: first cell -> the other cells."""
    sec = report.split("## Base vs Large (the seed's table, measured here)", 1)[1].split("\n## ", 1)[0]
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in sec.splitlines()
            if line.startswith("|") and not line.startswith("|---")]
    return {r[0]: r[1:] for r in rows}


def _close(cell: str, value: float, rel: float = 0.051) -> bool:
    return abs(float(cell.rstrip("×")) - value) <= rel * abs(value) + 1e-9


def test_seed_table_renders_measured_figures(measured):
    from w2vc.experiments.report import report_md, results_table

    cfg, recs = measured
    rows = [{"name": n, **r["metrics"]} for n, r in recs.items()]
    res = P.select(rows, cfg.objectives, cfg.maximize, cfg.budgets)
    t = _table(report_md(cfg, res, results_table(cfg, res), 60.0))
    head = t["figure"]
    pick = res.picks[0]["name"]
    assert head[3:5] + head[6:] == ["student-scratch (Base role)", "teacher (Large role)", f"{pick} (edge pick)"]
    base, large = recs["student-scratch"]["metrics"], recs["teacher"]["metrics"]
    seed = SEED_REFERENCE
    for label, seed_key, key, scale in [("params (M)", "params_m", "params_m", 1),
                                        ("CPU latency p50, 3 s of audio (ms)", "latency_3s_ms", "latency_p50_ms_3s", 1),
                                        ("size, weights as run (MB; seed: fp32)", "fp32_mb", "size_mb", 1),
                                        ("WER clean (%)", "wer_clean", "wer_clean", 100),
                                        ("WER noisy (%; here snr10)", "wer_noisy", "wer_snr10", 100)]:
        cells = t[label]
        assert _close(cells[0], scale * getattr(seed.base, seed_key)) and _close(cells[1], scale * getattr(seed.large, seed_key))
        assert _close(cells[2], seed.ratio(seed_key), 0.01)
        assert _close(cells[3], scale * base[key]) and _close(cells[4], scale * large[key]), (label, cells)
        assert _close(cells[6], scale * recs[pick]["metrics"][key])
        if base[key] > 0:
            assert _close(cells[5], large[key] / base[key], 0.01), (label, cells)
    assert _close(t["peak memory, RSS (MB)"][3], base["peak_rss_mb"]) and t["peak memory, RSS (MB)"][0] == "-"
    # every budget checked per row: the teacher is not below its own size; both tiny ones fit 16 MB
    assert base["params_m"] < large["params_m"] and pick == "student-scratch"
    assert t[f"budget `{BUDGETS[0]}` (= {large['params_m']:.4g})"][3:] == ["✓", "✗", "", "✓"]
    assert t[f"budget `{BUDGETS[1]}`"][3:] == ["✓", "✓", "", "✓"]
    assert t["fits the device budget"][3:] == ["yes", "no (1 of 2 budgets met)", "", "yes"]


def test_report_rerendered_from_sweep_files(measured, tmp_path):
    from w2vc.experiments.rerender import report_from_dir

    cfg, recs = measured
    root = tmp_path / "sweep"
    (root / "evals").mkdir(parents=True)
    (root / "config.json").write_text(json.dumps(cfg.to_dict(), default=str))
    for r in recs.values():
        (root / "evals" / f"{r['name']}-{r['key']}.json").write_text(json.dumps(r))
    rep, missing = report_from_dir(root)
    assert missing == [] and rep.plot.stat().st_size > 1000
    text = rep.report.read_text()
    assert "re-rendered from the sweep's files" in text
    t = _table(text)
    assert _close(t["params (M)"][4], recs["teacher"]["metrics"]["params_m"])
    # the paired WER difference to the teacher comes back from the stored transcripts
    assert re.search(r"\| student-scratch \|.*[-+]\d+\.\d\d \[[-+]\d+\.\d\d, [-+]\d+\.\d\d\]",
                     text.split("## Uncertainty")[1])


def _crowded_rows():
    """12 candidates, four of them nearly on top of each other, latency over two decades, some intervals."""
    specs = [("teacher", .040, 850, 27.3), ("teacher-bf16", .041, 860, 13.7), ("teacher-int8-dynamic", .041, 845, 7.4),
             ("teacher-int8-static", .0405, 855, 7.4), ("teacher-int4", .060, 300, 4.1),
             ("teacher-inc-int4-rtn", .058, 310, 4.3), ("student-scratch", .067, 120, 8.3),
             ("distilled", .066, 118, 8.3), ("distilled-int8-static", .068, 40, 2.3),
             ("pruned-int8-static", .050, 60, 2.9), ("cascade-t0.9", .043, 200, 35.6), ("cascade-t0.7", .046, 9, 35.6)]
    rows = []
    for i, (name, wer, ms, mb) in enumerate(specs):
        r = {"name": name, "wer_clean": wer, "latency_p50_ms": float(ms), "size_mb": mb}
        if i % 3 != 2:
            r.update(wer_clean_lo=wer - .008, wer_clean_hi=wer + .009, latency_p50_ms_lo=ms * .95,
                     latency_p50_ms_hi=ms * 1.07)
        rows.append(r)
    return rows


def test_plot_labels_do_not_collide_and_show_what_it_says(tmp_path):
    from matplotlib.collections import PathCollection
    from matplotlib.container import ErrorbarContainer
    from matplotlib.text import Annotation, Text

    from w2vc.experiments import pareto_plot

    rows = _crowded_rows()
    res = P.select(rows, ["wer_clean", "latency_p50_ms", "size_mb"], budgets=["size_mb <= 16"])
    fig = pareto_plot.figure(res, "latency_p50_ms", "wer_clean", title="crowded")
    ax = fig.axes[0]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    labels = [a for a in ax.texts if isinstance(a, Annotation)]
    assert sorted(a.get_text() for a in labels) == sorted(r["name"] for r in rows)
    boxes = [Text.get_window_extent(a, renderer) for a in labels]
    for (i, a), (j, b) in itertools.combinations(enumerate(boxes), 2):
        assert not a.overlaps(b), (labels[i].get_text(), labels[j].get_text())
    frame = fig.bbox
    assert all(frame.x0 <= b.x0 and b.x1 <= frame.x1 and frame.y0 <= b.y0 and b.y1 <= frame.y1 for b in boxes)
    # WER in %, latency (9..860 ms) on a log axis, WER (4..7 %) not
    assert ax.get_xscale() == "log" and ax.get_yscale() == "linear" and "(%)" in ax.get_ylabel()
    dots = [c for c in ax.collections if isinstance(c, PathCollection)]
    ys = sorted(float(c.get_offsets()[0][1]) for c in dots)
    assert ys == pytest.approx(sorted(100 * r["wer_clean"] for r in rows))
    # marker area proportional to size_mb; hollow = not on the 3-objective front
    by_name = {r["name"]: r for r in res.rows}
    area = {float(c.get_offsets()[0][0]): float(c.get_sizes()[0]) for c in dots}
    big, small = by_name["teacher"], by_name["teacher-bf16"]
    assert area[big["latency_p50_ms"]] / area[small["latency_p50_ms"]] == pytest.approx(27.3 / 13.7)
    hollow = sum(len(c.get_facecolor()) == 0 or c.get_facecolor()[0][3] == 0 for c in dots)
    assert hollow == sum(not r["pareto"] for r in res.rows) > 0
    assert "size_mb" in ax.get_legend().get_title().get_text()
    assert sum(isinstance(c, ErrorbarContainer) for c in ax.containers) == sum("wer_clean_lo" in r for r in rows)
    # the line is the 2-D front of the plotted pair, not the 3-objective front
    (line,) = [ln for ln in ax.get_lines() if ln.get_label() == "front of the 2 plotted objectives"]
    want = brute_front([[r["latency_p50_ms"], r["wer_clean"]] for r in rows])
    assert sorted(line.get_xdata()) == sorted(rows[i]["latency_p50_ms"] for i in want)
    assert {r["name"] for r in res.front} != {rows[i]["name"] for i in want}
    # a narrow latency range stays linear; the saved PNG is written
    narrow = P.select([r for r in rows if 100 <= r["latency_p50_ms"] <= 900], ["wer_clean", "latency_p50_ms"])
    assert pareto_plot.figure(narrow, "latency_p50_ms", "wer_clean").axes[0].get_xscale() == "linear"
    assert P.plot(res, "latency_p50_ms", "wer_clean", tmp_path / "p.png").stat().st_size > 10_000
