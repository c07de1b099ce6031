"""`w2vc search` across machines: workers share one Optuna study in PostgreSQL and log to one MLflow
tracking server backed by PostgreSQL.

The test starts a real PostgreSQL server itself (Debian's `postgresql`, installed by ./setup.sh): `initdb` in a
temp dir, `pg_ctl start` on 127.0.0.1 and a free port (as the `postgres` user when run as root: PostgreSQL
refuses to run as root), two databases, then a real `mlflow server` on it, then two concurrent `w2vc search`
processes on the tiny models and corpus of tests/conftest.py. Nothing is mocked; all is torn down after.
"""

from __future__ import annotations

import collections
import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from tests.experiments.test_search_whatif import SPACE, _search_config

TRIALS = (2, 2)  # --trials of the two concurrent workers
STUDY = "tiny-pg"
EXPERIMENT = "tiny-search"  # the experiment of _search_config
USER, PASSWORD = "w2vc", "w2vc-test-pw"


def _pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: Path(p).parts[-3].zfill(8))
    if not found:
        pytest.fail("PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin/initdb): run ./setup.sh, "
                    "which installs Debian's postgresql package")
    return Path(found[-1]).parent


def _as_pg_user() -> list[str]:
    """The command prefix that runs PostgreSQL's programs as an unprivileged user."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.fail("running as root but there is no 'postgres' user to run PostgreSQL as: run ./setup.sh "
                    "(Debian's postgresql package creates it)")
    if not shutil.which("runuser"):
        pytest.fail("running as root but `runuser` (util-linux) is missing: cannot drop to the 'postgres' user")
    return ["runuser", "-u", "postgres", "--"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return "(no log)"


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"mlflow server exited ({proc.returncode}) before answering:\n{_tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"mlflow server did not answer {url} within {timeout:.0f} s:\n{_tail(log)}")


def _stop(proc: subprocess.Popen, timeout: float = 30):
    """End a process started with start_new_session (the server and its workers), TERM then KILL."""
    if proc.poll() is not None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=timeout)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="module")
def pg_server():
    """A throw-away PostgreSQL server on 127.0.0.1 (password login); yields its base URL."""
    bindir, prefix = _pg_bin(), _as_pg_user()
    # not under tmp_path: pytest's temp root is private to the test user, and the server runs as `postgres`
    pgdir = Path(tempfile.mkdtemp(prefix="w2vc-pg-"))
    data, sock, log, pwfile = pgdir / "data", pgdir / "sock", pgdir / "postgres.log", pgdir / "pw"
    sock.mkdir()
    pwfile.write_text(PASSWORD + "\n")
    if prefix:
        for p in (pgdir, sock, pwfile):
            shutil.chown(p, "postgres", "postgres")

    def pg(*args, timeout=120):
        r = subprocess.run([*prefix, *map(str, args)], cwd=pgdir, capture_output=True, text=True, timeout=timeout)
        assert r.returncode == 0, f"{args[0]} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}\n{_tail(log)}"

    started, port = False, _free_port()
    try:
        pg(bindir / "initdb", "-D", data, "-U", USER, "--auth=scram-sha-256", f"--pwfile={pwfile}",
           "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions")
        opts = (f"-c listen_addresses=127.0.0.1 -p {port} -k {sock} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")  # nothing here is kept
        pg(bindir / "pg_ctl", "-D", data, "-l", log, "-w", "-t", "60", "-o", opts, "start")
        started = True
        yield f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{port}"
    finally:
        if started:
            pg(bindir / "pg_ctl", "-D", data, "-m", "fast", "-w", "stop")
        shutil.rmtree(pgdir, ignore_errors=True)


def _create_db(base: str, name: str) -> str:
    import psycopg

    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return f"{base}/{name}"


@pytest.fixture
def pg_mlflow(tmp_path, pg_server):
    """Databases `optuna` and `mlflow` on the server, and an MLflow tracking server on the latter."""
    storage, backend = _create_db(pg_server, "optuna"), _create_db(pg_server, "mlflow")
    http_port = _free_port()
    artifacts, server_log = tmp_path / "mlartifacts", tmp_path / "mlflow-server.log"
    # artifacts proxied by the server (mlflow-artifacts:/), as workers on other machines need them
    with open(server_log, "w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend,
             "--artifacts-destination", str(artifacts), "--host", "127.0.0.1", "--port", str(http_port),
             "--workers", "1"],
            cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            # no GenAI job runner: not needed here, and it doubles the start and the stop
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    try:
        tracking = f"http://127.0.0.1:{http_port}"
        _wait_http(f"{tracking}/health", server, server_log)
        yield {"storage": storage, "backend": backend, "tracking": tracking, "artifacts": artifacts}
    finally:
        _stop(server)


def _run_workers(cmds: list[tuple[list, Path]], env: dict, timeout: float = 600) -> list[str]:
    """All workers at once (output to files, so a full pipe never stalls one); their stdout. None is left running."""
    procs = []
    try:
        for args, cwd in cmds:
            out, err = open(cwd / "stdout.txt", "w+"), open(cwd / "stderr.txt", "w+")
            procs.append((subprocess.Popen([sys.executable, "-m", "w2vc.cli", *map(str, args)], cwd=cwd,
                                           env=env, stdout=out, stderr=err, text=True), out, err))
        deadline, texts = time.monotonic() + timeout, []
        for p, out, err in procs:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
            out.seek(0)
            err.seek(0)
            o, e = out.read(), err.read()
            assert p.returncode == 0, f"stdout:\n{o}\nstderr:\n{e}"
            texts.append(o)
        return texts
    finally:
        for p, out, err in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            out.close()
            err.close()


def test_two_workers_share_a_postgres_study_and_an_mlflow_server(tmp_path, pg_mlflow, tiny_corpus,
                                                                  tiny_layer_model, tiny_group_model):
    import optuna
    import psycopg
    from mlflow.tracking import MlflowClient

    cfg = _search_config(tmp_path, tiny_corpus, tiny_layer_model, tiny_group_model)
    storage, tracking = pg_mlflow["storage"], pg_mlflow["tracking"]
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking, "OMP_NUM_THREADS": "1"}
    cwds = [tmp_path / f"worker{i}" for i in range(len(TRIALS))]
    for c in cwds:
        c.mkdir()
    # both start at once on a fresh database: first use (table creation) must be serialised between them
    outs = _run_workers([(["search", cfg, "--trials", n, "--storage", storage, "--study", STUDY,
                           "--json", c / "out.json"], c) for c, n in zip(cwds, TRIALS)], env)
    for out in outs:
        assert f"study {STUDY} in {storage}" in out
        assert "MLflow logging failed" not in out, out  # log_run only warns: a lost run must fail here

    # the study in PostgreSQL: exactly the trials of both workers, all complete, distinct numbers
    total = sum(TRIALS)
    assert optuna.study.get_all_study_names(storage) == [STUDY]
    study = optuna.load_study(study_name=STUDY, storage=storage)
    trials = study.trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * total
    assert sorted(t.number for t in trials) == list(range(total))
    for t in trials:
        assert set(t.params) == set(SPACE) and len(t.values) == 2
    assert max(json.loads((c / "out.json").read_text())["n_trials"] for c in cwds) == total
    # each worker ran its own --trials, none ran a trial of the other (its figure files, in its own cwd)
    ran = [{int(json.loads(f.read_text())["name"].rsplit("trial", 1)[1])
            for f in (c / "runs" / "figures").glob("*.json")} for c in cwds]
    assert [len(r) for r in ran] == list(TRIALS) and not set.intersection(*ran)

    # MLflow, asked through the server: one finished run per trial, all in the config's experiment
    client = MlflowClient(tracking_uri=tracking)
    exp = client.get_experiment_by_name(EXPERIMENT)
    assert exp is not None and exp.artifact_location.startswith("mlflow-artifacts:")
    every = [e.experiment_id for e in client.search_experiments()]
    of_study = client.search_runs(every, filter_string=f"tags.`w2vc.study` = '{STUDY}'")
    assert {r.info.experiment_id for r in of_study} == {exp.experiment_id}
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == total and len(of_study) == total
    seen = collections.Counter(r.data.tags.get("optuna.trial") for r in runs)
    assert seen == collections.Counter(str(t.number) for t in trials)  # each trial number exactly once
    by_trial = {int(r.data.tags["optuna.trial"]): r for r in runs}
    for t in trials:
        r = by_trial[t.number]
        assert r.info.status == "FINISHED" and r.info.run_name == f"{STUDY}-trial{t.number}"
        assert r.data.tags["w2vc.kind"] == "search-trial"
        assert {k: r.data.params[k] for k in SPACE} == {k: str(v) for k, v in t.params.items()}
        assert r.data.metrics["wer_clean"] == pytest.approx(t.values[0])
        assert r.data.metrics["size_mb"] == pytest.approx(t.values[1])
        assert client.list_artifacts(r.info.run_id), "no artifacts uploaded through the server"
    assert any(p.is_file() for p in pg_mlflow["artifacts"].rglob("*"))  # ... into its artifact destination

    # and both stores really are the PostgreSQL databases (not a stray local file)
    with psycopg.connect(storage) as conn:
        assert conn.execute("SELECT count(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0] == total
    with psycopg.connect(pg_mlflow["backend"]) as conn:
        assert conn.execute("SELECT count(*) FROM runs WHERE lifecycle_stage = 'active'").fetchone()[0] == total


RACE = """
import sys, time
from pathlib import Path
import optuna
from w2vc.experiments.search import _init_lock
url, me, other = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
me.touch()
while not other.exists():  # both imported: go together
    time.sleep(0.001)
with _init_lock(url):
    optuna.create_study(storage=url, study_name="race", directions=["minimize"] * 2, load_if_exists=True)
"""


def test_workers_starting_together_on_a_fresh_postgres_study_both_start(tmp_path, pg_server):
    """Without search's init lock, two processes creating the same fresh study database at the same moment
    lose one to a race in table creation (UniqueViolation on pg_type), every time."""
    url = _create_db(pg_server, "race")
    flags = [tmp_path / "ready0", tmp_path / "ready1"]
    procs = [subprocess.Popen([sys.executable, "-c", RACE, url, flags[i], flags[1 - i]], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in range(2)]
    try:
        outs = [p.communicate(timeout=300)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [0, 0], "\n---\n".join(outs)
    import optuna

    assert optuna.study.get_all_study_names(url) == ["race"]
