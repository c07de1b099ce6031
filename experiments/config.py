"""Sweep configuration: YAML (safe_load) → validated, typed dataclasses; errors name the bad key.

A candidate is a chain of steps from a starting model (`teacher`, `student`, or a path); `grid` expands
one candidate into several by step parameter, addressed as `<kind>.<option>` (first step of that kind)
or `<index>.<option>`.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from w2vc.experiments.pareto import Budget
from w2vc.experiments.recipes import get_step


class ConfigError(ValueError):
    pass


def _check_keys(d: dict, allowed: set[str], where: str) -> None:
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(d).__name__}")
    bad = sorted(set(d) - allowed)
    if bad:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(bad)}; allowed: {', '.join(sorted(allowed))}")


@dataclass(frozen=True)
class DataConfig:
    corpus: str = "data/corpus"
    hours: float = 8.0
    seed: int = 0


@dataclass(frozen=True)
class EvalConfig:
    """Args:
        split: the clean test split; sets: which of its scored sets count (clean, snr20, snr10, snr5,
        unseen_synth); limit: utterances per set (None = all); threads: for latency and WER runs;
        seconds: audio lengths for latency (the first is the headline); repeats: timed runs per length.
    """

    split: str = "test"
    sets: tuple[str, ...] = ("clean", "snr10")
    limit: int | None = 200
    threads: int | None = None
    seconds: tuple[float, ...] = (3.0,)
    repeats: int = 20


@dataclass(frozen=True)
class ExportPicks:
    enabled: bool = True
    max_picks: int = 3
    register: bool = True
    dir: str = "exports"


@dataclass(frozen=True)
class Candidate:
    name: str
    start: str  # "teacher" | "student" | a model directory
    steps: tuple[dict, ...] = ()


@dataclass(frozen=True)
class SweepConfig:
    name: str
    teacher: str
    student: str | None
    data: DataConfig
    eval: EvalConfig
    objectives: tuple[str, ...]
    maximize: tuple[str, ...]
    budgets: tuple[Budget, ...]
    candidates: tuple[Candidate, ...]
    export: ExportPicks
    experiment: str = "w2vc-sweeps"
    work_dir: str = "runs/sweeps"
    source: str = ""
    raw: dict = field(default_factory=dict, compare=False)

    def start_path(self, start: str) -> str:
        return {"teacher": self.teacher, "student": self.student}.get(start, start) or start

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("raw")
        d["budgets"] = [str(b) for b in self.budgets]
        return d


TOP_KEYS = {"name", "teacher", "student", "data", "eval", "objectives", "maximize", "budgets", "candidates",
            "export", "experiment", "work_dir", "search"}


def _expand(c: dict, i: int) -> list[Candidate]:
    where = f"candidates[{i}]" + (f" ({c.get('name')})" if isinstance(c, dict) and c.get("name") else "")
    _check_keys(c, {"name", "from", "steps", "grid"}, where)
    if "name" not in c:
        raise ConfigError(f"{where}: missing 'name'")
    steps = c.get("steps") or []
    if not isinstance(steps, list):
        raise ConfigError(f"{where}.steps: expected a list of steps")
    for j, s in enumerate(steps):
        if not isinstance(s, dict) or "kind" not in s:
            raise ConfigError(f"{where}.steps[{j}]: each step needs 'kind' (e.g. kind: prune)")
    grid = c.get("grid") or {}
    _check_keys(grid, set(grid), f"{where}.grid")
    axes = []
    for key, values in grid.items():
        if "." not in str(key) or not isinstance(values, list) or not values:
            raise ConfigError(f"{where}.grid: '{key}' must be '<kind or index>.<option>: [values...]'")
        target, opt = str(key).split(".", 1)
        idx = int(target) if target.isdigit() else next((j for j, s in enumerate(steps) if s["kind"] == target), None)
        if idx is None or idx >= len(steps):
            raise ConfigError(f"{where}.grid: no step '{target}' in this candidate")
        axes.append([(idx, opt, v) for v in values])
    out = []
    for combo in itertools.product(*axes) if axes else [()]:
        st = copy.deepcopy(steps)
        suffix = ""
        for idx, opt, v in combo:
            st[idx][opt] = v
            suffix += f"-{opt}{v}"
        out.append(Candidate(str(c["name"]) + suffix, str(c.get("from", "teacher")), tuple(st)))
    return out


def parse_config(raw: dict, source: str = "") -> SweepConfig:
    _check_keys(raw, TOP_KEYS, "config")
    for k in ("name", "teacher", "candidates"):
        if k not in raw:
            raise ConfigError(f"config: missing required key '{k}'")
    data = raw.get("data") or {}
    _check_keys(data, {"corpus", "hours", "seed"}, "data")
    ev = dict(raw.get("eval") or {})
    _check_keys(ev, {"split", "sets", "limit", "threads", "seconds", "repeats"}, "eval")
    for k in ("sets", "seconds"):
        if k in ev:
            ev[k] = tuple(ev[k])
    ex = raw.get("export") or {}
    _check_keys(ex, {"enabled", "max_picks", "register", "dir"}, "export")
    try:
        budgets = tuple(Budget.parse(b) for b in raw.get("budgets") or [])
    except ValueError as e:
        raise ConfigError(f"budgets: {e}") from None
    cands: list[Candidate] = []
    if not isinstance(raw["candidates"], list) or not raw["candidates"]:
        raise ConfigError("candidates: expected a non-empty list")
    for i, c in enumerate(raw["candidates"]):
        cands.extend(_expand(c, i))
    names = [c.name for c in cands]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"candidates: duplicate name(s) {', '.join(dup)}")
    cfg = SweepConfig(name=str(raw["name"]), teacher=str(raw["teacher"]), student=raw.get("student"),
                      data=DataConfig(**data), eval=EvalConfig(**ev),
                      objectives=tuple(raw.get("objectives") or ("wer_clean", "latency_p50_ms", "size_mb")),
                      maximize=tuple(raw.get("maximize") or ()), budgets=budgets, candidates=tuple(cands),
                      export=ExportPicks(**ex), experiment=str(raw.get("experiment", "w2vc-sweeps")),
                      work_dir=str(raw.get("work_dir", "runs/sweeps")), source=source, raw=raw)
    for c in cfg.candidates:  # validate every step's options now, not an hour into the sweep
        if c.start == "student" and not cfg.student:
            raise ConfigError(f"candidate {c.name}: from 'student' but the config has no 'student'")
        for j, s in enumerate(c.steps):
            params = {k: v for k, v in s.items() if k != "kind"}
            try:
                get_step(s["kind"]).make_config(params, None)
            except (ValueError, TypeError) as e:
                raise ConfigError(f"candidate {c.name}, step {j} ({s['kind']}): {e}") from None
    return cfg


def load_config(path: str | Path) -> SweepConfig:
    p = Path(path)
    if not p.exists():
        packaged = Path(__file__).parent / "configs" / p.name
        if packaged.exists():
            p = packaged
        else:
            raise FileNotFoundError(f"no such config: {path}")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from None
    return parse_config(raw or {}, str(p))
