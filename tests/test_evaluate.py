"""Integration tests of the evaluate stage on the tiny model: public sets through omind.sources, kill-and-resume,
skipped candidates, a fourth judge scheme and a sixth task family added in one place each; the judge gate, the report
schema, paired tables per candidate, the null control, and invalidation of every record when an adapter changes."""
import functools, json, os, signal, subprocess, sys, textwrap, time
from pathlib import Path

import pandas as pd
import pytest

from omind.core import load_params, read_jsonl
from omind.params_file import ParamsError
from omind.core_eval import EvalSetSpec, load_eval_set
from omind.heldout import HeldoutParams, reserve_heldout, write_heldout
from omind.testing import toy_knowledge
from omind.evaluate import run_evaluate, figures_evaluate
from omind.eval_candidates import COUNSELLOR_PROMPT
from omind.eval_jobs import load_instances
from omind.eval_report import EvalReport, evaluation_report
from omind.judge import JudgeScheme, register_scheme, unregister_scheme, clean_answer
from omind.stats import bootstrap_wtl, pair_outcome
from omind.text import parse_choice, parse_label, LETTERS

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT/"tests"/"fixtures"/"evaluate"
PY = sys.executable


@pytest.mark.parametrize("spec,n,first_label", [
    (dict(name="medmcqa", layout="medmcqa", path=str(FIX/"medmcqa.jsonl")), 2, "SSRIs"),
    (dict(name="mhqa", layout="mcqa", path=str(FIX/"mhqa.csv"), answer_index_base=1), 2, "Trauma-focused CBT"),
    (dict(name="mmlu_pp", layout="mmlu", path=str(FIX/"mmlu_professional_psychology.csv")), 2, "Pavlov"),
    (dict(name="dreaddit", layout="dreaddit", task="classification", path=str(FIX/"dreaddit.csv")), 3, "stressed"),
    (dict(name="sad", layout="sad", task="root_cause", path=str(FIX/"sad.csv")), 3, "Work"),
    (dict(name="cams", layout="cams", task="root_cause", path=str(FIX/"cams.csv"),
          label_names={"2": "jobs and careers", "4": "relationships"}), 2, "jobs and careers"),
    (dict(name="angst", layout="text_label", task="classification", path=str(FIX/"angst.csv")), 3, "comorbid"),
])
def test_public_sets(spec, n, first_label):
    items = load_eval_set(EvalSetSpec(**spec))
    assert len(items) == n and items[0]["label"] == first_label and items[0]["source"] == spec["name"]
    it = items[0]
    assert it["messages"][-1]["role"] == "user" and it["task"] == spec.get("task", "mcqa")
    if it["options"]:   # the gold answer is one of the options and parses back from its letter
        k = it["options"].index(it["label"])
        assert f"{LETTERS[k]}. {it['label']}" in it["messages"][-1]["content"]
        assert parse_choice(f"Answer: {LETTERS[k]}", it["options"])[0] == k
    else:
        assert parse_label(f"Label: {it['label']}", it["labels"]) == (it["label"], "label")


def test_public_set_errors(tmp_path):
    "A bad public set is an error naming the params key (via omind.sources), at params time where it can be."
    (tmp_path/"x.csv").write_text("question,answer\nq,A\n")
    with pytest.raises(ValueError, match="option"):
        load_eval_set(EvalSetSpec(layout="mcqa", path=str(tmp_path/"x.csv")), where="evaluate.public_sets.0.")
    with pytest.raises(ValueError, match=r"evaluate\.public_sets\.0\.allow_shortfall"):
        load_eval_set(EvalSetSpec(layout="mmlu", path=str(FIX/"mmlu_professional_psychology.csv"), n=5), where="evaluate.public_sets.0.")
    base = {"run": {"results_dir": str(tmp_path), "name": "r"}}
    with pytest.raises(ParamsError, match="needs post items"):     # layout and task do not fit
        load_params(None, {**base, "evaluate": {"public_sets": [{"layout": "mmlu", "path": str(FIX/"sad.csv"), "task": "root_cause"}]}})
    with pytest.raises(ParamsError, match="root_cause"):            # typo in a task name: did you mean
        load_params(None, {**base, "evaluate": {"core_tasks": ["root_cuase"]}})


def test_bootstrap_and_swap():
    # candidate preferred in both orders -> win; judge that always says "A" -> tie (position bias removed)
    outs = [pair_outcome("A", "B")] * 3 + [pair_outcome("A", "A")]
    b = bootstrap_wtl(outs, rounds=100, seed=0)
    assert b["win"][0] == 75.0 and b["tie"][0] == 25.0 and b["lose"] == (0.0, 0.0, 0.0)
    assert 0 <= b["win"][1] <= 75 <= b["win"][2] <= 100


def make_upstream(root: Path, name: str, ids=("s-cri-01", "m-dep-01", "s-gad-02"), extra_rows=()):
    "A run folder with a finished benchmark (seed instances) and dataset stage (tiny test split)."
    from omind.dataset import save_splits
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
    rows = rows + list(extra_rows)
    save_splits({"train": rows, "test": rows}, rd/"dataset"/"hf")
    (rd/"dataset"/"done.json").write_text("{}")
    write_heldout(rd/"synthesis"/"heldout.jsonl", _reserved())       # what synthesis reserves before it makes any seed
    return rd


@functools.lru_cache(1)
def _reserved():
    return reserve_heldout(toy_knowledge(), HeldoutParams(n_mcqa=8, n_classification=4, n_transfer=4))


SMALL = {"recall": {"n": 3}, "controls": {"null_n": 2, "positive_n": 2, "core_null_n": 6}, "nll": {"max_instances": 2}}
NO_GATE = {k: None for k in ("min_accuracy", "min_kappa", "min_yes_rate", "max_yes_rate", "min_position_consistency")}


def params_dict(root: Path, name: str) -> dict:
    return {"run": {"results_dir": str(root), "name": name},
            "models": {"default": {"model": "embedded:tiny-random", "batch_size": 8}},
            "evaluate": {"candidates": [{"name": "prompted", "model": "student", "system_prompt": COUNSELLOR_PROMPT},
                                        {"name": "dpo", "model": "train:dpo"}],
                         "reply_max_new_tokens": 6, "answer_max_new_tokens": 4, "bootstrap_rounds": 50,
                         "chunk_size": 4, "max_calibration_cases": 8, "schemes": ["binary", "likert"], **SMALL}}


def small_params(root: Path, name: str, **ev) -> dict:
    "Baseline only (no pairs), one instance, few calibration cases: the cheapest full run of the stage."
    return {"run": {"results_dir": str(root), "name": name, "figures_dir": str(root/"figs")},
            "models": {"default": {"model": "embedded:tiny-random", "batch_size": 16}},
            "evaluate": {"candidates": [], "reply_max_new_tokens": 4, "answer_max_new_tokens": 4, "bootstrap_rounds": 20,
                         "max_calibration_cases": 4, **SMALL, **ev}}


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
    done = json.loads((tmp_path/"killed"/"evaluate"/"done.json").read_text())
    assert done["key"] == json.loads((tmp_path/"killed"/"evaluate"/"stage.json").read_text())["key"]   # finish_stage under the key it opened with
    clean = run_evaluate(load_params(None, params_dict(tmp_path, "clean")))
    assert s["rubric"] == clean["rubric"] and s["core"] == clean["core"] and s["winrates"] == clean["winrates"]
    assert s["calibration"] == clean["calibration"]
    assert any("dpo" in n and "skipped" in n for n in s["notes"])          # training has not run: clear message
    for f in ("items", "turns", "instances", "models", "core", "baselines", "paired", "nll", "winrates", "controls", "calibration"):
        assert (tmp_path/"killed"/"evaluate"/f"{f}.csv").exists()


def test_fourth_judge_scheme(tmp_path):
    "A new judge scheme is ONE register_scheme call: params accept it, the stage judges, aggregates, reports and plots it."
    def parse_grade(text):
        w = (clean_answer(text).lower().split() or [""])[0].strip(".!")
        return w if w in ("poor", "fair", "good") else None
    register_scheme(JudgeScheme(
        name="grade3", labels=("poor", "fair", "good"), title="three grades", unit="% good",
        ask="Is {what} poor, fair or good on the criterion? Answer with {options}.",
        parse=parse_grade, value=lambda label: label, retry="Answer with exactly one of: {options}.",
        norm={"poor": 0.0, "fair": 0.5, "good": 1.0}.get, lo=0, hi=100))
    try:
        make_upstream(tmp_path, "g", ids=("s-cri-01",))
        P = load_params(None, small_params(tmp_path, "g", schemes=["binary", "grade3"], core_tasks=[], gate=NO_GATE))
        s = run_evaluate(P)
        items = pd.read_csv(tmp_path/"g"/"evaluate"/"items.csv")
        g = items[items["scheme"] == "grade3"]
        assert len(g) == len(items) / 2 > 0 and set(g["value"]) <= {"poor", "fair", "good"} and g["norm"].notna().all()
        assert set(g["raw"]) <= {"poor", "fair", "good"}                   # score mode: the most probable allowed answer
        for level in ("turn", "conversation"):
            score = s["headline"]["rubric"]["base"][level]["grade3"]
            assert 0 <= score <= 100
        rep = evaluation_report(EvalReport.from_json(s))
        assert "| model | level | binary | grade3 | instances | missing |" in rep and "grade3 = % good" in rep
        judged = read_jsonl(tmp_path/"g"/"evaluate"/"judgments.jsonl")
        assert any(r["scheme"] == "grade3" and set(r["probs"]) == {"poor", "fair", "good"} for r in judged)
        assert "evaluate_rubric_scores" in {p.stem for p in figures_evaluate(P)}
    finally:
        unregister_scheme("grade3")
    with pytest.raises(ParamsError, match="grade"):                    # gone from the registry: params refuse it again
        load_params(None, small_params(tmp_path, "g", schemes=["grade3"]))


def test_sixth_task_family(tmp_path):
    "A sixth (toy) task family registered in one place is a core task: its test split and a public set are scored."
    from omind.tasks import register, unregister
    from omind.testing import toy_task_family
    fam = register(toy_task_family())
    try:
        rows = [dict(id=f"tf{i}", task=fam.name, label=lab, options=[],
                     messages=[{"role": "user", "content": f"Is symptom {i} a common symptom of depression?\nAnswer Yes or No."},
                               {"role": "assistant", "content": f"Answer: {lab}"}]) for i, lab in enumerate(["Yes", "No", "Yes"])]
        make_upstream(tmp_path, "six", ids=("s-cri-01",), extra_rows=rows)
        (tmp_path/"tf.csv").write_text("text,label\nInsomnia is common in depression,Yes\nFever is common in panic disorder,No\n")
        P = load_params(None, small_params(tmp_path, "six", schemes=["binary"], public_sets=[
            {"name": "tf_public", "layout": "text_label", "path": str(tmp_path/"tf.csv"), "task": fam.name}]))
        assert fam.name in P.evaluate.core_task_names()
        s = run_evaluate(P)
        core = {(r["set"], r["task"], r["method"]): r for r in s["core"]}
        assert core[("synthesized", fam.name, "label_ll")]["n"] == 3 and core[("tf_public", fam.name, "label_ll")]["n"] == 2
        assert ("synthesized", "mcqa", "letter_calibrated") in core
        preds = pd.read_csv(tmp_path/"six"/"evaluate"/"core_predictions.csv")
        assert set(preds[preds["task"] == fam.name]["gold"]) == {"Yes", "No"}
        scored = read_jsonl(tmp_path/"six"/"evaluate"/"scores.jsonl")      # the public item was scored by label log-likelihood
        assert any(r["key"].startswith("base|core|tf_public|tf_public:train:0|") and r["label_logprobs"] for r in scored)
        assert f"synthesized_{fam.name}_label_ll" in s["headline"]["core_accuracy"]["base"]
    finally:
        unregister(fam.name)


REPORT_KEYS = {"run", "models", "core", "baselines", "paired", "nll", "nll_paired", "judge_gate", "rubric", "winrates",
               "controls", "safety", "training"}
STRICT_GATE = {"min_accuracy": 1.0, "min_kappa": 1.0}      # the random tiny judge cannot be perfect on the cases


@pytest.fixture(scope="module")
def gated_run(tmp_path_factory):
    "One run of the stage: baseline + a prompted candidate, a judge held to a gate it cannot pass."
    root = tmp_path_factory.mktemp("gated")
    make_upstream(root, "gated", ids=("s-cri-01", "m-dep-01"))
    P = load_params(None, small_params(root, "gated", schemes=["binary"], gate=STRICT_GATE, max_win_explanations=2, max_win_conversations=1,
                                       candidates=[{"name": "prompted", "model": "student", "system_prompt": COUNSELLOR_PROMPT}],
                                       controls={"null_n": 3, "positive_n": 2}))
    s = run_evaluate(P)
    ev = root/"gated"/"evaluate"
    return s, json.loads((ev/"report.json").read_text()), (ev/"report.md").read_text(), ev


def test_report_schema(gated_run):
    s, rep, md, ev = gated_run
    assert REPORT_KEYS <= set(rep)
    assert [(m["name"], m["role"]) for m in rep["models"]] == [("base", "baseline"), ("prompted", "candidate")]
    assert all(m["fingerprint"] for m in rep["models"])
    sets = {(r["set"], r["task"]) for r in rep["core"]}
    assert {("heldout_kb", "mcqa"), ("heldout_kb", "classification"), ("transfer_kb", "mcqa")} <= sets
    assert {r["n"] for r in rep["core"] if r["set"] == "transfer_kb"} == {4}
    assert rep["training_control"] == {"prompted": {**rep["training_control"]["prompted"], "status": "not trained"}}   # a prompt is not training
    assert rep["core_null_control"]["n"] > 0 and rep["core_null_control"]["discordant"] == 0      # the baseline matches itself
    assert rep["primary"]["set"] == "heldout_kb"
    for r in rep["paired"]: assert {"p_holm", "primary", "control"} <= set(r)
    assert "## Controls of the core scores" in md and "Scorer null control" in md
    for r in rep["core"]: assert r["n"] > 0 and r["accuracy_lo"] <= r["accuracy"] <= r["accuracy_hi"]
    assert {r["method"] for r in rep["core"] if r["task"] == "mcqa"} >= {"letter_raw", "letter_calibrated"}
    assert {b["baseline"] for b in rep["baselines"]} >= {"chance", "always_A", "majority_label"}
    for r in rep["paired"]: assert {"n", "diff", "lo", "hi", "p", "mde"} <= set(r)
    assert {(r["model"], r["level"]) for r in rep["nll"]} == {(m, l) for m in ("base", "prompted") for l in ("turn", "conversation")}
    assert {(r["model"], r["level"]) for r in rep["nll_paired"]} == {("prompted", "turn"), ("prompted", "conversation")}
    assert {"passed", "reasons", "metrics", "thresholds"} <= set(rep["judge_gate"])
    assert {"n", "win", "tie", "lose", "winrate", "lo", "hi", "covers_parity"} <= set(rep["controls"]["null"])
    assert {"n", "winrate", "lo", "hi", "gold_wins"} <= set(rep["controls"]["positive"])
    for f in ("core", "paired", "baselines", "nll", "nll_paired", "controls", "pairs", "winrates", "items", "calibration"):
        assert (ev/f"{f}.csv").exists(), f
    assert s["judge_gate"] == rep["judge_gate"]                          # summary.json carries the report's numbers


def test_gate_failure_marks_headlines_gated(gated_run):
    s, rep, md, ev = gated_run
    gate = rep["judge_gate"]
    assert gate["passed"] is False and any("accuracy" in r or "kappa" in r for r in gate["reasons"])
    assert rep["rubric"] and all(r["gated"] for r in rep["rubric"])
    assert rep["winrates"] and all(r["gated"] for r in rep["winrates"])
    assert rep["safety"]["gated"] is True
    h = s["headline"]
    assert h["judge_gate"]["passed"] is False and h["judge_gate"]["label"].startswith("judge failed calibration (")
    assert all(v is None for m in h["rubric"].values() for lvl in m.values() for v in lvl.values())
    assert all(v is None for m in h["winrate"].values() for v in m.values())
    assert h["core_accuracy"]["base"] and h["nll"]["base"]["turn"] > 0    # judge-free numbers stay headlines
    assert md.count("Not reported: judge failed calibration (") == 2 and "## oMind-Chat rubric scores" in md
    items = pd.read_csv(ev/"items.csv")                                # the raw verdicts stay for inspection
    assert len(items) and items["value"].notna().any() and pd.read_csv(ev/"models.csv")["gated"].all()


def test_null_control_covers_parity(gated_run):
    "The baseline judged against itself (two sampling seeds, both orders) must cover parity."
    s, rep, md, ev = gated_run
    n = rep["controls"]["null"]
    assert n["n"] + n["missing"] == 2 + 3 and set(n["sets"]) == {"null_qa", "null_turns"}   # 2 open questions + 3 benchmark turns
    assert n["covers_parity"] is True and n["lo"] <= 50 <= n["hi"]
    pairs = pd.read_csv(ev/"pairs.csv")
    assert set(pairs["domain"]) >= {"null_qa", "null_turns", "positive", "explanations", "conversations"}
    assert "null test" in md and "covers parity" in md


def make_adapter(dest: Path, seed: int) -> Path:
    "A LoRA adapter of the tiny model with random, non-zero weights, where the train stage puts it."
    import torch
    from peft import LoraConfig, get_peft_model
    from omind.model_store import tiny_model_dir, load_causal_lm
    torch.manual_seed(seed)
    pm = get_peft_model(load_causal_lm(str(tiny_model_dir())),
                        LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    pm.save_pretrained(str(dest))
    cfg = json.loads((dest/"adapter_config.json").read_text())
    (dest/"adapter_config.json").write_text(json.dumps({**cfg, "base_model_name_or_path": str(tiny_model_dir())}))
    return dest


def test_retrained_adapter_invalidates_records(tmp_path):
    "Evaluate with an SFT adapter, retrain it (other weights, same folder), rerun: the adapter's records are recomputed, the others reused."
    make_upstream(tmp_path, "inv", ids=("s-cri-01", "m-dep-01"))
    ad = make_adapter(tmp_path/"inv"/"train"/"sft"/"adapter", seed=0)
    P = load_params(None, small_params(tmp_path, "inv", schemes=["binary"], max_win_explanations=2, max_win_conversations=1,
                                       candidates=[{"name": "sft", "model": "train:sft"},
                                                   {"name": "prompted", "model": "student", "system_prompt": COUNSELLOR_PROMPT}]))
    s1 = run_evaluate(P)
    assert [m["name"] for m in s1["models"]] == ["base", "sft", "prompted"]
    assert {r["candidate"] for r in s1["paired"]} == {"sft", "prompted"}       # a paired table for each candidate
    assert {r["model"] for r in s1["nll_paired"]} == {"sft", "prompted"}
    ev = tmp_path/"inv"/"evaluate"
    logs = ("generations.jsonl", "scores.jsonl", "nll.jsonl", "judgments.jsonl")
    keys = lambda f, m: {r["key"] for r in read_jsonl(ev/f) if r["key"].startswith(m + "|")}
    before = {(f, m): keys(f, m) for f in logs for m in ("base", "sft", "prompted")}
    fp1 = s1["models"][1]["fingerprint"]
    make_adapter(ad, seed=1)                                                 # "retrained": new weights in the same folder
    s2 = run_evaluate(P)
    assert s2["models"][1]["fingerprint"] != fp1
    for f in ("generations.jsonl", "scores.jsonl", "nll.jsonl"):
        new = keys(f, "sft") - before[(f, "sft")]
        assert len(new) == len(before[(f, "sft")]) > 0, f                    # every sft record made again
        for m in ("base", "prompted"): assert keys(f, m) == before[(f, m)], (f, m)   # nothing else recomputed
    sc = {r["key"].rsplit("|", 1)[0]: r for r in read_jsonl(ev/"scores.jsonl") if r["key"].startswith("sft|") and r["key"] not in before[("scores.jsonl", "sft")]}
    old = {r["key"].rsplit("|", 1)[0]: r for r in read_jsonl(ev/"scores.jsonl") if r["key"] in before[("scores.jsonl", "sft")]}
    assert any(sc[k]["letter_logprobs"] != old[k]["letter_logprobs"] for k in sc if sc[k].get("letter_logprobs"))   # new model, new numbers
    nll = lambda s: {(r["model"], r["level"]): r["nll"] for r in s["nll"]}
    assert nll(s1)[("sft", "turn")] != nll(s2)[("sft", "turn")] and nll(s1)[("base", "turn")] == nll(s2)[("base", "turn")]
