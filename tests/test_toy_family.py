"""A task family with held-out items and an evaluation is one new definition: the toy family of omind.testing,
registered in one place, goes through the real stages (synthesis with its held-out reservation, review, dataset,
evaluate) and its held-out items are scored in the report, with nothing else edited."""
import json
from pathlib import Path

import pandas as pd

from omind.core import load_params, read_jsonl, run_dir
from omind.testing import FakeLLM, toy_knowledge, ToyRetriever

ROOT = Path(__file__).resolve().parents[1]
BUILTIN = ("mcqa", "classification", "root_cause", "qa", "conversation")
N_SYNTH, N_HELD = 8, 6

# The scripted teacher's explanation: long enough, citing the facts, so that every toy sample is well formed.
EXPLAIN = "The facts given describe this symptom and the condition it belongs to [F1]. A clinician would weigh it the same way [F2]."


def _benchmark(P, ids=("s-cri-01",)):
    "A finished benchmark stage holding seed instances `ids` of the shipped benchmark (the evaluate stage needs one)."
    from omind.eval_jobs import load_instances
    seed = {i["id"]: i for i in load_instances(ROOT/"omind"/"data"/"benchmark"/"seed.json")}
    d = run_dir(P, "benchmark")
    (d/"benchmark.json").write_text(json.dumps({"format": "omind-benchmark", "version": 1, "name": "t", "instances": [seed[i] for i in ids]}))
    (d/"done.json").write_text("{}")


def test_toy_family_with_heldout_through_every_stage(tmp_path, sixth_family, monkeypatch):
    import omind.backends
    from omind.synthesis import run_synthesis
    from omind.review import run_review
    from omind.dataset import run_dataset, load_splits, SPLITS
    from omind.evaluate import run_evaluate
    from omind.heldout import load_heldout, leaks, HELDOUT_SOURCE
    name = sixth_family.name
    real = omind.backends.llm_for
    teacher = FakeLLM([EXPLAIN])
    monkeypatch.setattr(omind.backends, "llm_for", lambda P, role: teacher if role == "teacher" else real(P, role))
    P = load_params(None, {
        "run": {"name": "toy", "results_dir": str(tmp_path), "figures_dir": str(tmp_path/"figs")},
        "models": {"default": {"model": "embedded:tiny-random", "batch_size": 16}},
        "synthesis": {"n": {**{t: 0 for t in BUILTIN}, name: N_SYNTH}, "chunk_size": N_SYNTH,
                      "heldout": {"n_mcqa": 0, "n_classification": 0, "n_transfer": 0, f"n_{name}": N_HELD}},   # the family's own count
        "review": {"chunk_size": N_SYNTH, "max_regenerations": 0, "nli_scoring": "first_token"},
        "evaluate": {"candidates": [], "schemes": ["binary"], "reply_max_new_tokens": 4, "answer_max_new_tokens": 4, "bootstrap_rounds": 20,
                     "max_calibration_cases": 4, "recall": {"n": 0}, "controls": {"null_n": 2, "positive_n": 2, "core_null_n": 4},
                     "nll": {"max_instances": 2}}})
    assert P.synthesis.heldout.count(name) == N_HELD

    # synthesis: the held-out statements are reserved first, then the seeds avoid them
    kb = toy_knowledge()
    s = run_synthesis(P, kb=kb, retriever=ToyRetriever(kb), progress=False)
    assert s["seeded"][name] == N_SYNTH and s["heldout"] == {HELDOUT_SOURCE: N_HELD}
    held = load_heldout(P)
    assert len(held) == N_HELD and {(it["task"], it["source"]) for it in held} == {(name, HELDOUT_SOURCE)}
    assert sorted(it["label"] for it in held) == ["No"] * (N_HELD // 2) + ["Yes"] * (N_HELD // 2)     # gold balanced
    recs = [r for r in read_jsonl(run_dir(P, "synthesis")/"samples.jsonl") if r["task"] == name]
    assert len(recs) == N_SYNTH and all(r["status"] == "ok" for r in recs)
    assert not {r["seed"]["question"] for r in recs} & {it["question"] for it in held}                # disjoint from training

    # review: every toy sample is validated by its own family and kept
    rv = run_review(P)
    assert rv["kept_by_task"] == {name: N_SYNTH}
    # dataset: the samples reach the splits; none teaches a reserved item
    d = run_dataset(P)
    dd = load_splits(run_dir(P, "dataset")/"hf")
    rows = [r for x in SPLITS for r in dd[x]]
    assert d["by_task"] == {name: N_SYNTH} and sorted(r["id"] for r in rows) == sorted(r["id"] for r in recs)
    assert leaks(held, rows, kb) == []

    # evaluate: the held-out items are scored and reported as the family's held-out set
    _benchmark(P)
    run_evaluate(P)
    ev = run_dir(P, "evaluate")
    rep = json.loads((ev/"report.json").read_text())
    rows = [r for r in rep["core"] if r["set"] == HELDOUT_SOURCE and r["task"] == name]
    assert rows and {r["n"] for r in rows} == {N_HELD} and {r["model"] for r in rows} == {"base"}
    preds = pd.read_csv(ev/"core_predictions.csv")
    mine = preds[(preds["set"] == HELDOUT_SOURCE) & (preds["task"] == name)]
    assert set(mine["id"]) == {it["id"] for it in held} and set(mine["gold"]) == {"Yes", "No"}
    assert name in (ev/"report.md").read_text()

    # nothing outside the family's definition names it: no module of the package, no params file
    named = [p for p in [*(ROOT/"omind").rglob("*.py"), *(ROOT/"params").rglob("*.yaml")]
             if p.name not in ("testing.py", "_modidx.py") and name in p.read_text(encoding="utf-8")]
    assert named == []
