"Trackers (run.report_to): a real `omind run` of one stage logs its summary numbers to a local TensorBoard store, read back with TensorBoard's own reader; W&B, MLflow and Trackio get the same numbers through their libraries (replaced here by recording fakes); a missing library says how to install it."
import json, sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from omind.core import load_params, run_dir, atomic_write_json, STAGES
from omind.tracking import log_stage, summary_numbers, stage_numbers, _metric_name

sys.path.insert(0, str(Path(__file__).parent))
from pipeline_run import params, omind                                   # noqa: E402  (the pipeline tests' helpers)


def test_omind_run_logs_a_stage_to_tensorboard(tmp_path):
    "`omind run --only knowledge` with run.report_to [tensorboard]: the stage's numbers are in the run's TensorBoard store."
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    p = params(tmp_path, extra="")
    p.write_text(p.read_text().replace("run: {name: tiny,", "run: {report_to: [tensorboard], name: tiny,"))
    r = omind("run", str(p), "--only", "knowledge")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    run = tmp_path/"results"/"tiny"
    want = {_metric_name(k): v for k, v in summary_numbers(json.loads((run/"knowledge"/"summary.json").read_text()), "knowledge").items()}
    assert want, "the knowledge summary has no numbers"
    ea = EventAccumulator(str(run/"tracking"/"tensorboard")); ea.Reload()
    step = [s.name for s in STAGES].index("knowledge")
    got = {t: [(e.step, e.value) for e in ea.Scalars(t)] for t in ea.Tags()["scalars"]}
    assert set(got) == set(want)
    for t, v in want.items(): assert got[t] == [(step, pytest.approx(v, rel=1e-6))], t


class Recorder:
    "A stand-in for a tracker library: records every call."
    def __init__(self, name): self.name, self.calls = name, []
    def __getattr__(self, k):
        def f(*a, **kw):
            self.calls.append((k, a, kw))
            if k == "start_run": return _MlflowRun(self, kw.get("run_id") or "run-1")
            if k == "init" and self.name == "wandb": return SimpleNamespace(log=lambda d, **kw2: self.calls.append(("run.log", (d,), kw2)),
                                                                          finish=lambda: self.calls.append(("run.finish", (), {})))
        return f


class _MlflowRun:
    def __init__(self, rec, run_id): self.rec, self.info = rec, SimpleNamespace(run_id=run_id)
    def __enter__(self): return self
    def __exit__(self, *a): self.rec.calls.append(("end_run", (), {}))


def test_wandb_mlflow_trackio_get_the_numbers(tmp_path, monkeypatch):
    fakes = {n: Recorder(n) for n in ("wandb", "mlflow", "trackio")}
    for n, f in fakes.items(): monkeypatch.setitem(sys.modules, n, f)
    P = load_params(None, {"run": {"name": "trk", "results_dir": str(tmp_path), "report_to": ["wandb", "mlflow", "trackio"]}})
    atomic_write_json(run_dir(P, "evaluate")/"summary.json", {"headline": {"core": {"sft": {"heldout_kb/mcqa": 0.3}}}, "n_models": 3, "models": ["x"]})
    got = log_stage(P, "evaluate")
    assert got == {"evaluate/headline/core/sft/heldout_kb/mcqa": 0.3, "evaluate/n_models": 3.0}   # lists (per-model tables) left out
    w = fakes["wandb"].calls
    assert w[0][0] == "init" and w[0][2]["name"] == "trk" and w[0][2]["resume"] == "allow" and w[1][1][0] == {"evaluate/headline/core/sft/heldout_kb/mcqa": 0.3, "evaluate/n_models": 3.0}
    t = fakes["trackio"].calls
    assert [c[0] for c in t] == ["init", "log", "finish"] and t[1][1][0]["evaluate/n_models"] == 3.0
    m = fakes["mlflow"].calls
    assert [c[0] for c in m] == ["set_experiment", "start_run", "log_metrics", "end_run"] and m[2][2]["step"] == [s.name for s in STAGES].index("evaluate")
    assert (run_dir(P, "tracking")/"mlflow_run_id").read_text().strip() == "run-1"
    log_stage(P, "evaluate")                                            # the next stage resumes the same MLflow run
    assert [c for c in fakes["mlflow"].calls if c[0] == "start_run"][-1][2]["run_id"] == "run-1"
    assert not any(c[0] == "set_experiment" for c in fakes["mlflow"].calls[4:])


def test_missing_library_and_nothing_by_default(tmp_path, monkeypatch):
    P = load_params(None, {"run": {"name": "trk", "results_dir": str(tmp_path), "report_to": ["wandb"]}})
    atomic_write_json(run_dir(P, "dataset")/"summary.json", {"n": 5})
    monkeypatch.setitem(sys.modules, "wandb", None)                   # not installed
    with pytest.raises(ImportError, match=r'pip install "omind\[wandb\]"'): log_stage(P, "dataset")
    Q = load_params(None, {"run": {"name": "trk", "results_dir": str(tmp_path)}})
    assert Q.run.report_to == [] and log_stage(Q, "dataset") == {} and not (tmp_path/"trk"/"tracking").exists()
    assert stage_numbers(Q, "dataset") == {"dataset/n": 5.0}
