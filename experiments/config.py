"""Sweep configuration: YAML (safe_load) → validated, typed dataclasses; errors name the bad key.

A candidate is a chain of steps from a starting model (`teacher`, `student`, or a path); `grid` expands
one candidate into several by step parameter, addressed as `<kind>.<option>` (first step of that kind)
or `<index>.<option>`; `search:` (experiments/search.py) addresses its knobs the same way. A step option
may name a model: `@teacher`, `@student`, or `@<candidate>` (what another candidate builds, e.g. a
cascade's `strong`). Unknown keys are rejected by the one check of w2vc.core.config, so a typo fails at
parse time, not an hour into a sweep.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from w2vc.core.config import ConfigBase, ConfigError, check_keys
from w2vc.experiments.pareto import Budget
from w2vc.experiments.recipes import get_step

__all__ = ["Candidate", "ConfigError", "DataConfig", "EvalConfig", "ExportPicks", "Knob", "SearchConfig",
           "SweepConfig", "load_config", "parse_config"]


@dataclass(frozen=True)
class DataConfig(ConfigBase):
    """corpus / hours / seed: where the corpus is and how `w2vc data synth` makes it when missing;
    synth: further SynthConfig options (e.g. piper_share: 0), checked at parse time."""

    WHAT = "data"

    corpus: str = "data/corpus"
    hours: float = 8.0
    seed: int = 0
    synth: dict = field(default_factory=dict)

    def __post_init__(self):
        from dataclasses import fields as dc_fields

        from w2vc.core.config import check_keys
        from w2vc.data.synth import SynthConfig

        check_keys(self.synth, [f.name for f in dc_fields(SynthConfig) if f.name not in ("hours", "seed")],
                   "data.synth")

    def synth_config(self):
        from w2vc.data.synth import SynthConfig

        return SynthConfig(hours=self.hours, seed=self.seed, **self.synth)


@dataclass(frozen=True)
class EvalConfig(ConfigBase):
    """Args:
        split: the clean test split; sets: which of its scored sets count (clean, snr20, snr10, snr5,
        unseen_synth); limit: utterances per set (None = all); threads: for latency and WER runs;
        seconds: audio lengths for latency (the first is the headline); repeats: timed runs per length.
        processes / min_time_s / max_spread: latency methodology (w2vc.eval.cost.CostConfig): fresh processes
        per candidate, interleaved over candidates; seconds of timed runs per process at least; per-process
        spread above which a figure is re-measured, then flagged.
        reference: the candidate whose WER every other one is compared with on the same utterances.
        long_chunk_seconds: also score the `<split>_long` recordings chunked at these window lengths
            (w2vc.eval.longform: wer_long_10s, chunk_p50_ms_long_10s, rtf_long_10s, wer_long_ratio_10s, ...);
            empty = off. Cascades route whole utterances, so they have none. long_recordings: how many
            recordings (None: as many as `limit`).
    """

    WHAT = "eval"

    split: str = "test"
    sets: tuple[str, ...] = ("clean", "snr10")
    limit: int | None = 200
    threads: int | None = None
    seconds: tuple[float, ...] = (3.0,)
    repeats: int = 20
    processes: int = 5
    min_time_s: float = 1.0
    max_spread: float = 1.2
    reference: str = "teacher"
    long_chunk_seconds: tuple[float, ...] = ()
    long_recordings: int | None = None


@dataclass(frozen=True)
class ExportPicks(ConfigBase):
    WHAT = "export"

    enabled: bool = True
    max_picks: int = 3
    register: bool = True
    dir: str = "exports"


def _step_index(steps, target: str) -> int | None:
    """`<kind or index>` of a `<kind or index>.<option>` address → the step's index (first of that kind)."""
    if target.isdigit():
        return int(target) if int(target) < len(steps) else None
    return next((j for j, s in enumerate(steps) if s["kind"] == target), None)


def _check_steps(steps, where: str) -> list[dict]:
    if not isinstance(steps, list):
        raise ConfigError(f"{where}: expected a list of steps")
    for j, s in enumerate(steps):
        if not isinstance(s, dict) or "kind" not in s:
            raise ConfigError(f"{where}[{j}]: each step needs 'kind' (e.g. kind: prune)")
    return steps


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


@dataclass(frozen=True)
class Knob:
    """One searched option: the `key` (`<kind or index>.<option>`) resolved to `steps[step][option]`; an int
    range (both ends int), a float range, or categorical `choices`."""

    key: str
    step: int
    option: str
    low: int | float | None = None
    high: int | float | None = None
    choices: tuple = ()

    @property
    def is_int(self) -> bool:
        return not self.choices and isinstance(self.low, int) and isinstance(self.high, int)

    def probes(self) -> tuple:
        """Values every step config must accept: both ends of a range, every choice."""
        return self.choices or (self.low, self.high)

    def middle(self):
        if self.choices:
            return self.choices[0]
        return (self.low + self.high) // 2 if self.is_int else (self.low + self.high) / 2

    @classmethod
    def parse(cls, key, rng, steps: list[dict]) -> Knob:
        where = f"search.space.{key}"
        target, _, opt = str(key).partition(".")
        if not opt:
            raise ConfigError(f"{where}: expected '<kind or index>.<option>'")
        idx = _step_index(steps, target)
        if idx is None:
            raise ConfigError(f"search.space: no step '{target}' in search.steps")
        if opt == "kind":
            raise ConfigError(f"{where}: a step's kind is not a knob")
        if isinstance(rng, dict) and set(rng) == {"choices"} and isinstance(rng["choices"], list | tuple) \
                and rng["choices"]:
            return cls(str(key), idx, opt, choices=tuple(rng["choices"]))
        if isinstance(rng, list) and len(rng) == 2 and all(_is_number(x) for x in rng):
            lo, hi = rng if all(isinstance(x, int) for x in rng) else (float(rng[0]), float(rng[1]))
            if lo > hi:
                raise ConfigError(f"{where}: low {lo} > high {hi}")
            return cls(str(key), idx, opt, lo, hi)
        raise ConfigError(f"{where}: expected [low, high] or {{choices: [...]}}")


@dataclass(frozen=True)
class SearchConfig(ConfigBase):
    """`search:` of a config: the Optuna search of experiments/search.py over a step template.

    Args:
        start: the model the template starts from (YAML `from`: teacher, student or a path).
        sampler: tpe or nsga2. steps: the template, each step a `{kind: ..., option: value}` mapping.
        space: the knobs Optuna sets in the template (YAML `<kind or index>.<option>: range`).
    """

    WHAT = "search"
    SAMPLERS = ("tpe", "nsga2")

    start: str = "teacher"
    sampler: str = "tpe"
    steps: tuple[dict, ...] = ()
    space: tuple[Knob, ...] = ()

    @classmethod
    def from_dict(cls, d: dict) -> SearchConfig:
        check_keys(d, ("from", "sampler", "steps", "space"), cls.WHAT)
        if not d.get("space") or not d.get("steps"):
            raise ConfigError("search: needs 'steps' (a template) and 'space' (knobs)")
        sampler = d.get("sampler", "tpe")
        if sampler not in cls.SAMPLERS:
            raise ConfigError(f"search.sampler must be tpe or nsga2, got {sampler!r}")
        steps = _check_steps(d["steps"], "search.steps")
        check_keys(d["space"], d["space"], "search.space")  # a mapping
        space = tuple(Knob.parse(k, v, steps) for k, v in d["space"].items())
        targets = [(k.step, k.option) for k in space]
        twice = sorted({k.key for k in space if targets.count((k.step, k.option)) > 1})
        if twice:
            raise ConfigError(f"search.space: {', '.join(twice)} set the same option")
        return cls(str(d.get("from", "teacher")), sampler, tuple(steps), space)

    def trial_steps(self, values: dict[str, object]) -> list[dict]:
        """The template with each knob set to `values[knob.key]` (a fresh copy: the template is shared)."""
        steps = copy.deepcopy(list(self.steps))
        for k in self.space:
            steps[k.step][k.option] = values[k.key]
        return steps

    def probe_points(self):
        """Knob settings to validate the template with: each probe of a knob, the others in the middle
        (every end at once can be invalid together, e.g. nothing left to prune, while each is fine)."""
        middle = {k.key: k.middle() for k in self.space}
        for k in self.space:
            for v in k.probes():
                yield k.key, {**middle, k.key: v}


@dataclass(frozen=True)
class Candidate:
    name: str
    start: str  # "teacher" | "student" | a model directory
    steps: tuple[dict, ...] = ()
    when_cpu_has: tuple[str, ...] = ()  # built and measured only on a CPU with one of these flags

    def skipped_on(self, flags: frozenset[str]) -> str | None:
        """Why this candidate is skipped on a CPU with `flags` (None: it runs)."""
        if self.when_cpu_has and not set(self.when_cpu_has) & flags:
            return f"needs a CPU with {' or '.join(self.when_cpu_has)} (this one has none)"
        return None


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
    search: SearchConfig | None = None

    def start_path(self, start: str) -> str:
        return {"teacher": self.teacher, "student": self.student}.get(start, start) or start

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("raw")
        if d["search"] is None:  # a sweep-only config records what it did before `search:` was typed
            d.pop("search")
        d["budgets"] = [str(b) for b in self.budgets]
        return d


TOP_KEYS = ("name", "teacher", "student", "data", "eval", "objectives", "maximize", "budgets", "candidates",
            "export", "experiment", "work_dir", "search")


def _expand(c: dict, i: int) -> list[Candidate]:
    where = f"candidates[{i}]" + (f" ({c.get('name')})" if isinstance(c, dict) and c.get("name") else "")
    check_keys(c, ("name", "from", "steps", "grid", "when_cpu_has"), where)
    flags = c.get("when_cpu_has") or []
    if not isinstance(flags, list) or not all(isinstance(f, str) and f for f in flags):
        raise ConfigError(f"{where}.when_cpu_has: a list of CPU flags (e.g. [avx512_bf16, amx_bf16])")
    if "name" not in c:
        raise ConfigError(f"{where}: missing 'name'")
    steps = _check_steps(c.get("steps") or [], f"{where}.steps")
    grid = c.get("grid") or {}
    check_keys(grid, grid, f"{where}.grid")  # a mapping
    axes = []
    for key, values in grid.items():
        if "." not in str(key) or not isinstance(values, list) or not values:
            raise ConfigError(f"{where}.grid: '{key}' must be '<kind or index>.<option>: [values...]'")
        target, opt = str(key).split(".", 1)
        idx = _step_index(steps, target)
        if idx is None:
            raise ConfigError(f"{where}.grid: no step '{target}' in this candidate")
        axes.append([(idx, opt, v) for v in values])
    out = []
    for combo in itertools.product(*axes) if axes else [()]:
        st = copy.deepcopy(steps)
        suffix = ""
        for idx, opt, v in combo:
            st[idx][opt] = v
            suffix += f"-{opt}{v}"
        out.append(Candidate(str(c["name"]) + suffix, str(c.get("from", "teacher")), tuple(st), tuple(flags)))
    return out


def _check_step_options(kind: str, params: dict, data: str, where: str) -> None:
    """A step's options against its typed config, now rather than when the step runs."""
    try:
        if kind == "quantize" and "accuracy_control" in params:  # resolved by the runner, checked here
            from w2vc.experiments.accuracy_control import check_step_params

            params = check_step_params(params)
        get_step(kind).make_config(params, data)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{where}: {e}") from None


def _check_search(s: SearchConfig, cfg: SweepConfig) -> None:
    """The template's steps with the knobs at their probe points (see SearchConfig.probe_points)."""
    if s.start == "student" and not cfg.student:
        raise ConfigError("search: from 'student' but the config has no 'student'")
    for _, values in s.probe_points():
        for j, st in enumerate(s.trial_steps(values)):
            at = ", ".join(f"{k.key}={values[k.key]!r}" for k in s.space if k.step == j)
            _check_step_options(st["kind"], {k: v for k, v in st.items() if k != "kind"}, cfg.data.corpus,
                                f"search.steps[{j}] ({st['kind']})" + (f" with {at}" if at else ""))


def _candidate_refs(c: Candidate) -> list[str]:
    return [v[1:] for s in c.steps for k, v in s.items()
            if k != "kind" and isinstance(v, str) and v.startswith("@") and v not in ("@teacher", "@student")]


def _check_refs(cands: list[Candidate]) -> None:
    """`@<candidate>` in a step option (e.g. a cascade's strong model) names another candidate, one that
    names none itself (so the runner builds it first and no chain can loop)."""
    named = {c.name: c for c in cands}
    for c in cands:
        for r in _candidate_refs(c):
            if r not in named:
                raise ConfigError(f"candidate {c.name}: '@{r}' names no candidate (use @teacher, @student or "
                                  "@<candidate name>, grid suffix included)")
            if r == c.name or _candidate_refs(named[r]):
                raise ConfigError(f"candidate {c.name}: '@{r}' must name another candidate that refers to none")


def parse_config(raw: dict, source: str = "") -> SweepConfig:
    check_keys(raw, TOP_KEYS, "config")
    for k in ("name", "teacher", "candidates"):
        if k not in raw:
            raise ConfigError(f"config: missing required key '{k}'")
    data = DataConfig.from_dict(raw.get("data") or {})
    ev = EvalConfig.from_dict(raw.get("eval") or {})
    ex = ExportPicks.from_dict(raw.get("export") or {})
    search = SearchConfig.from_dict(raw["search"]) if raw.get("search") else None  # empty = no search
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
    _check_refs(cands)
    cfg = SweepConfig(name=str(raw["name"]), teacher=str(raw["teacher"]), student=raw.get("student"),
                      data=data, eval=ev,
                      objectives=tuple(raw.get("objectives") or ("wer_clean", "latency_p50_ms", "size_mb")),
                      maximize=tuple(raw.get("maximize") or ()), budgets=budgets, candidates=tuple(cands),
                      export=ex, experiment=str(raw.get("experiment", "w2vc-sweeps")),
                      work_dir=str(raw.get("work_dir", "runs/sweeps")), source=source, raw=raw, search=search)
    for c in cfg.candidates:  # validate every step's options now, not an hour into the sweep
        if c.start == "student" and not cfg.student:
            raise ConfigError(f"candidate {c.name}: from 'student' but the config has no 'student'")
        for j, s in enumerate(c.steps):
            _check_step_options(s["kind"], {k: v for k, v in s.items() if k != "kind"}, cfg.data.corpus,
                                f"candidate {c.name}, step {j} ({s['kind']})")
    if search is not None:
        _check_search(search, cfg)
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
