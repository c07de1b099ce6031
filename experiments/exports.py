"""The sweep's last stage: its budget-feasible Pareto picks as deployable ONNX bundles, each logged to its
candidate run as an MLflow model (pyfunc: audio in, text out; `pyfunc_asr`) and registered, so
`mlflow.pyfunc.load_model("models:/w2vc-<sweep>-<candidate>/<version>")` transcribes with no w2vc installed.

Re-runnable: a bundle already exported from the same artifact (its `source_hash`) is kept, and only a
registration that failed or was cut off is done again. A bundle appears under its final name only once
complete (written to `<name>.tmp`, then renamed).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, replace
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

from w2vc.core.artifact import Artifact, Kind
from w2vc.core.cascade import CascadeSpec
from w2vc.experiments import pareto as P
from w2vc.experiments import pyfunc_asr
from w2vc.experiments.config import SweepConfig

if TYPE_CHECKING:
    from w2vc.eval.tracking import Tracker
    from w2vc.experiments.runner import CandidateResult


def export_picks(cfg: SweepConfig, res: P.ParetoResult, results: list[CandidateResult],
                 tracker: Tracker | None) -> list[Path]:
    """Up to `export.max_picks` picks, knee first, to `<export.dir>/<sweep>/<candidate>/`."""
    by_name = {r.name: r for r in results}
    register = tracker is not None and cfg.export.register
    out_paths = []
    for row in res.picks[: cfg.export.max_picks]:
        cr = by_name[row["name"]]
        art = Artifact.open(cr.artifact)
        dst = Path(cfg.export.dir) / cfg.name / cr.name
        if _exported(dst, art):
            out_paths.append(dst)
            if register and cr.run_id and "registered_model" not in tracker.run(cr.run_id).tags:
                # exported before, but its registration failed or was cut off
                register_bundle(tracker, cr, dst, cfg, reuse_logged=True)
            continue
        if export_bundle(cfg, cr, art, dst):
            out_paths.append(dst)
            if register and cr.run_id:
                register_bundle(tracker, cr, dst, cfg)
    return out_paths


def _exported(dst: Path, art: Artifact) -> bool:
    meta = dst / "w2vc.json"
    return meta.exists() and json.loads(meta.read_text()).get("source_hash") == art.hash


def export_bundle(cfg: SweepConfig, cr: CandidateResult, art: Artifact, dst: Path) -> bool:
    """ONNX bundle + model card at `dst` (an ONNX candidate is copied as is, a cascade becomes one folder
    with its two members: `export_cascade`); False when the candidate has no ONNX form (a warning says why)."""
    from w2vc.compress.export import ExportConfig, export_onnx
    from w2vc.core.card import write_model_card

    metrics = {k: v for k, v in cr.metrics.items() if isinstance(v, (int, float))}
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    cascade = None
    try:
        if art.kind is Kind.CASCADE:
            cascade = export_cascade(art, tmp, cfg.data.corpus)
        elif art.format == "onnx":
            shutil.copytree(art.path, tmp)
            write_model_card(tmp, art.provenance.get("report", {}), metrics)
        else:
            export_onnx(art, ExportConfig(parity_data=cfg.data.corpus), tmp, metrics=metrics)
    except ValueError as e:  # e.g. a torch runtime-transform candidate: no ONNX equivalent
        print(f"warning: pick {cr.name} not exported: {e}")
        shutil.rmtree(tmp, ignore_errors=True)
        return False
    prov = json.loads((tmp / "w2vc.json").read_text()) if (tmp / "w2vc.json").exists() else {}
    prov.update(source_hash=art.hash, candidate=cr.name, sweep=cfg.name, metrics=metrics)
    (tmp / "w2vc.json").write_text(json.dumps(prov, indent=1, default=str))
    if dst.exists():
        shutil.rmtree(dst)  # our own previous export of this candidate, superseded
    os.replace(tmp, dst)
    write_model_card(dst, prov.get("report", {}), metrics, prov.get("lineage", []),  # final path in the card
                     cascade=cascade)
    for role in ("fast", "strong") if cascade else ():  # members' cards name their new place too
        member = Artifact.open(dst / role)
        write_model_card(member.path, member.provenance.get("report", {}), None, member.provenance.get("lineage", []))
    return True


def export_cascade(art: Artifact, out: Path, parity_data: str | None = None) -> dict:
    """A cascade as one self-contained bundle: each member an ONNX bundle in `fast/` and `strong/` (copied,
    or exported with a parity check), and `w2vc_cascade.json` naming them relative to the bundle, so it
    moves as one folder and loads with `w2vc.core.load.load` and the pyfunc (`pyfunc_asr`; `w2vc
    transcribe` runs its members, not the routing). Returns the routing rule (for the card)."""
    from w2vc.compress.export import ExportConfig, export_onnx

    spec = CascadeSpec.read(art.path)
    out.mkdir(parents=True)
    hashes = {}
    for role in ("fast", "strong"):
        member = Artifact.open(spec.member(art.path, role))
        if member.format == "onnx":
            shutil.copytree(member.path, out / role)
        else:
            export_onnx(member, ExportConfig(parity_data=parity_data), out / role)
        hashes[role] = Artifact.open(out / role).hash
    replace(spec, fast="fast", strong="strong", fast_hash=hashes["fast"], strong_hash=hashes["strong"]).write(out)
    if (art.path / "w2vc.json").exists():
        shutil.copy(art.path / "w2vc.json", out / "w2vc.json")
    return {k: v for k, v in asdict(spec).items() if k in ("measure", "aggregation", "threshold", "alpha")}


def register_bundle(tracker: Tracker, cr: CandidateResult, bundle: Path, cfg: SweepConfig,
                    reuse_logged: bool = False) -> None:
    """The bundle as an MLflow model of the candidate's run, registered as w2vc-<sweep>-<candidate>
    (`log_bundle_model`). A failure is a warning: the bundle on disk is the deliverable."""
    try:
        name = f"w2vc-{cfg.name}-{cr.name}".replace("/", "-")
        ref = log_bundle_model(tracker, cr.run_id, bundle, name, reuse_logged=reuse_logged,
                               description=f"w2vc sweep {cfg.name}: candidate {cr.name}",
                               metadata={"w2vc_sweep": cfg.name, "w2vc_candidate": cr.name})
        tracker.set_tags(cr.run_id, {"registered_model": ref})
    except Exception as e:
        print(f"warning: model registry skipped for {cr.name} ({type(e).__name__}: {e})")


def pip_requirements() -> list[str]:
    """What the logged model imports (`pyfunc_asr.REQUIREMENTS`), pinned to the versions here."""
    return [f"{p}=={version(p)}" for p in pyfunc_asr.REQUIREMENTS]


def log_bundle_model(tracker: Tracker, run_id: str, bundle: Path, name: str, description: str = "",
                     metadata: dict | None = None, reuse_logged: bool = False) -> str:
    """Log `bundle` (ONNX graph + processor files, copied in) as an MLflow model of run `run_id` whose
    pyfunc is `pyfunc_asr`, and register it as a version of `name` whose source is that logged model;
    returns "name/version". `reuse_logged`: register the model the run logged before (its `logged_model`
    tag), when only the registration is to be done again."""
    model_id = tracker.run(run_id).tags.get("logged_model") if reuse_logged else None
    if not model_id:
        about = {"input": "audio file paths, or 16 kHz mono float arrays (one per utterance)",
                 "output": "one transcript per utterance (greedy CTC)"}
        model_id = tracker.log_pyfunc_model(run_id, name, bundle, Path(pyfunc_asr.__file__), pip_requirements(),
                                            metadata={**about, **(metadata or {})})
        tracker.set_tags(run_id, {"logged_model": model_id})
    return tracker.register_version(name, run_id, model_id, description=description)
