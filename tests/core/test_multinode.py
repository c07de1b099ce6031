"""Several machines: two torchrun launchers (one per "node", one process each) meet through the c10d rendezvous,
as nodes of a cluster would, train data-parallel over gloo, stop with a checkpoint, and a second pair of
launchers resumes the run to the end of its schedule."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import torch


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_nodes(args: list[str], tmp_path, tag: str, timeout: float = 150) -> list[dict]:
    """Start both launchers (`python -m torch.distributed.run` is what the `torchrun` script runs), wait for
    both; the summary each node's process wrote (--json)."""
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    procs, logs = [], []
    for node in (0, 1):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1", "--node_rank", str(node),
               "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}", "--rdzv_id", f"w2vc-{tag}",
               "--local_addr", "127.0.0.1", "-m", "w2vc.cli", "train", *args,
               "--json", str(tmp_path / f"{tag}-node{node}.json")]
        log = open(tmp_path / f"{tag}-node{node}.log", "w")
        logs.append(log)
        procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path))
    try:
        codes = [p.wait(timeout=timeout) for p in procs]
    finally:
        for p in procs:  # only on a hang: stop the launchers this test started (torchrun stops its workers)
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
        for log in logs:
            log.close()
    tails = [(tmp_path / f"{tag}-node{n}.log").read_text()[-3000:] for n in (0, 1)]
    assert codes == [0, 0], tails
    return [json.loads((tmp_path / f"{tag}-node{n}.json").read_text()) for n in (0, 1)]


def test_two_node_rendezvous_trains_then_resumes(tiny_corpus, tiny_layer_model, tmp_path):
    out, steps, stop = tmp_path / "run", 6, 3
    args = ["--arch", str(tiny_layer_model), "--data", str(tiny_corpus), "--out", str(out), "--steps", str(steps),
            "--eval-every", "3", "--warmup", "1", "--lr", "3e-3", "--batch-seconds", "4", "--dev-limit", "2",
            "--seed", "3", "--bf16", "off", "--threads", "1", "--num-workers", "1", "--device", "cpu"]
    first = _two_nodes(args + ["--stop-at-step", str(stop)], tmp_path, "first")
    assert [r["world"] for r in first] == [2, 2] and [r["steps"] for r in first] == [stop, stop]
    ck = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
    assert json.loads(ck["state"])["step"] == stop
    assert max(int(s["step"]) for s in ck["optim"]["state"].values()) == stop

    second = _two_nodes(args + ["--resume"], tmp_path, "second")
    assert [r["world"] for r in second] == [2, 2] and [r["steps"] for r in second] == [steps, steps]
    final = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
    assert json.loads(final["state"])["step"] == steps
    # the resumed processes took steps - stop optimizer steps on top of the restored ones
    assert max(int(s["step"]) for s in final["optim"]["state"].values()) == steps
    assert [h["step"] for h in second[0]["history"]] == [3, 6]
    assert (out / "best" / "model.safetensors").exists()
