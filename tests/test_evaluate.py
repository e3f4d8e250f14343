"Integration tests of the evaluate stage: public-set loaders on fixtures, kill-and-resume, skipped candidates."
import json, os, signal, subprocess, sys, textwrap, time
from pathlib import Path

import pytest

from omind.core import load_params, read_jsonl
from omind.evaluate import (PublicSetSpec, load_public_set, parse_choice, parse_label, load_instances, run_evaluate,
                            COUNSELLOR_PROMPT, bootstrap_wtl, pair_outcome)

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT/"tests"/"fixtures"/"evaluate"
PY = sys.executable


@pytest.mark.parametrize("spec,n,first_label", [
    (dict(name="medmcqa", format="mcqa", data_file=str(FIX/"medmcqa.jsonl")), 2, "SSRIs"),
    (dict(name="mhqa", format="mcqa", data_file=str(FIX/"mhqa.csv"), answer_index_base=1), 2, "Trauma-focused CBT"),
    (dict(name="mmlu_pp", format="mmlu", data_file=str(FIX/"mmlu_professional_psychology.csv")), 2, "Pavlov"),
    (dict(name="dreaddit", format="text_label", task="classification", data_file=str(FIX/"dreaddit.csv"),
          label_names={"0": "not stressed", "1": "stressed"}), 3, "stressed"),
    (dict(name="sad", format="text_label", task="root_cause", data_file=str(FIX/"sad.csv"), text_column="sentence",
          label_column="category"), 3, "Work"),
    (dict(name="cams", format="text_label", task="root_cause", data_file=str(FIX/"cams.csv"), label_column="cause",
          label_names={"2": "jobs and careers", "4": "relationships"}), 2, "jobs and careers"),
    (dict(name="angst", format="text_label", task="classification", data_file=str(FIX/"angst.csv")), 3, "comorbid"),
])
def test_public_sets(spec, n, first_label):
    items = load_public_set(PublicSetSpec(**spec))
    assert len(items) == n and items[0]["label"] == first_label
    it = items[0]
    assert it["messages"][-1]["role"] == "user" and it["task"] == spec.get("task", "mcqa")
    if it["options"]:   # the gold answer is one of the options and parses back from its letter
        k = it["options"].index(it["label"])
        assert parse_choice(f"Answer: {'ABCD'[k]}", it["options"])[0] == k
    else:
        assert parse_label(f"Label: {it['label']}", it["labels"]) == (it["label"], "label")


def test_public_set_errors(tmp_path):
    (tmp_path/"x.csv").write_text("question,answer\nq,A\n")
    with pytest.raises(ValueError, match="no options"):
        load_public_set(PublicSetSpec(name="x", format="mcqa", data_file=str(tmp_path/"x.csv")))
    (tmp_path/"y.csv").write_text("q,A,B\n")
    with pytest.raises(ValueError, match="MMLU rows"):
        load_public_set(PublicSetSpec(name="y", format="mmlu", data_file=str(tmp_path/"y.csv")))


def test_bootstrap_and_swap():
    # candidate preferred in both orders -> win; judge that always says "A" -> tie (position bias removed)
    outs = [pair_outcome("A", "B")] * 3 + [pair_outcome("A", "A")]
    b = bootstrap_wtl(outs, rounds=100, seed=0)
    assert b["win"][0] == 75.0 and b["tie"][0] == 25.0 and b["lose"] == (0.0, 0.0, 0.0)
    assert 0 <= b["win"][1] <= 75 <= b["win"][2] <= 100


def make_upstream(root: Path, name: str, ids=("s-cri-01", "m-dep-01", "s-gad-02")):
    "A run folder with a finished benchmark (seed instances) and dataset stage (tiny test split)."
    from datasets import Dataset, DatasetDict
    rd = root/name
    seed = {i["id"]: i for i in load_instances(ROOT/"omind"/"data"/"benchmark"/"seed.json")}
    (rd/"benchmark").mkdir(parents=True)
    (rd/"benchmark"/"benchmark.json").write_text(json.dumps({"format": "omind-benchmark", "version": 1, "name": "t",
                                                             "instances": [seed[i] for i in ids]}))
    (rd/"benchmark"/"done.json").write_text("{}")
    rows = [dict(id=f"m{i}", task="mcqa", label="A", options=["SSRIs", "opioids"],
                 messages=[{"role": "user", "content": f"Q{i}: first-line for panic? A. SSRIs B. opioids"}, {"role": "assistant", "content": "A"}])
            for i in range(3)]
    rows += [dict(id=f"q{i}", task="qa", label="", options=[],
                  messages=[{"role": "user", "content": f"What helps insomnia ({i})?"}, {"role": "assistant", "content": "Sleep hygiene."}])
             for i in range(2)]
    ds = Dataset.from_list(rows)
    DatasetDict(train=ds, test=ds).save_to_disk(str(rd/"dataset"/"hf"))
    (rd/"dataset"/"done.json").write_text("{}")
    return rd


def params_dict(root: Path, name: str) -> dict:
    return {"run": {"results_dir": str(root), "name": name},
            "models": {"default": {"model": "embedded:tiny-random", "batch_size": 8}},
            "evaluate": {"candidates": [{"name": "prompted", "model": "student", "system_prompt": COUNSELLOR_PROMPT},
                                        {"name": "dpo", "model": "train:dpo"}],
                         "reply_max_new_tokens": 6, "answer_max_new_tokens": 4, "bootstrap_rounds": 50,
                         "chunk_size": 4, "max_calibration_cases": 8, "schemes": ["binary", "likert"]}}


def test_kill_and_resume(tmp_path):
    "SIGKILL the stage while it judges; the rerun finishes without duplicates and matches an uninterrupted run."
    for name in ("killed", "clean"): make_upstream(tmp_path, name)
    pf = tmp_path/"p.json"; pf.write_text(json.dumps(params_dict(tmp_path, "killed")))
    script = textwrap.dedent(f"""
        import json
        from omind.core import load_params
        from omind.evaluate import run_evaluate
        run_evaluate(load_params(None, json.load(open({str(pf)!r}))))
    """)
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen([PY, "-c", script], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = tmp_path/"killed"/"evaluate"/"judgments.jsonl"
    t0 = time.time()
    while time.time() - t0 < 300 and proc.poll() is None:
        if log.exists() and len(read_jsonl(log)) >= 8: break
        time.sleep(0.2)
    assert proc.poll() is None, "the stage finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL); proc.wait()
    n_before = len(read_jsonl(log))
    assert n_before >= 8 and not (tmp_path/"killed"/"evaluate"/"done.json").exists()
    with open(log, "a") as f: f.write('{"key": "torn')                       # a torn last line, as a kill mid-write leaves
    s = run_evaluate(load_params(None, json.loads(pf.read_text())))
    recs = read_jsonl(log)
    keys = [r["key"] for r in recs]
    assert len(keys) == len(set(keys)) and len(keys) > n_before
    assert (tmp_path/"killed"/"evaluate"/"done.json").exists()
    clean = run_evaluate(load_params(None, params_dict(tmp_path, "clean")))
    assert s["rubric"] == clean["rubric"] and s["core"] == clean["core"] and s["winrates"] == clean["winrates"]
    assert s["calibration"] == clean["calibration"]
    assert any("dpo" in n and "skipped" in n for n in s["notes"])          # training has not run: clear message
    for f in ("items", "turns", "instances", "models", "core_metrics", "winrates", "calibration"):
        assert (tmp_path/"killed"/"evaluate"/f"{f}.csv").exists()
