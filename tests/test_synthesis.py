"""Synthesis integration tests: kill -9 and resume gives exactly the uninterrupted records; params files; source
datasets in their published layouts; honest counts; a sixth task family registered in one place."""
import json, os, signal, subprocess, sys, textwrap, time
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
FX = ROOT/"tests"/"fixtures"/"sources"
BUILTIN = ("mcqa", "classification", "root_cause", "qa", "conversation")

# A run of the synthesis stage with the tiny random model and the small real toy knowledge base, in its own
# process (so that it can be killed). Many small chunks, so that a kill lands part-way.
RUNNER = textwrap.dedent("""
    import sys, json, torch
    torch.set_num_threads(1)
    from omind.core import load_params
    from omind.synthesis import run_synthesis
    from omind.testing import toy_knowledge, ToyRetriever
    P = load_params(None, {"run": {"name": "r", "results_dir": sys.argv[1], "seed": 3},
                           "models": {"default": {"model": "embedded:tiny-random", "batch_size": 8}},
                           "synthesis": {"n": dict(mcqa=4, classification=3, root_cause=2, qa=2, conversation=2),
                                         "chunk_size": 2, "max_new_tokens": 16, "explain_max_new_tokens": 12,
                                         "client_max_new_tokens": 8, "prune_max_new_tokens": 6, "temperature": 0.7,
                                         "turns_min": 3, "turns_max": 4}})
    kb = toy_knowledge()
    s = run_synthesis(P, kb=kb, retriever=ToyRetriever(kb), progress=False)
    print(json.dumps({"n": s["n"]}))
""")

def _run(results_dir, **kw):
    return subprocess.Popen([PY, "-c", RUNNER, str(results_dir)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "TOKENIZERS_PARALLELISM": "false"}, **kw)

def _records(results_dir):
    p = Path(results_dir)/"r"/"synthesis"/"samples.jsonl"
    return [json.loads(l) for l in p.read_text().splitlines()]

def _lines(p):
    return len(p.read_text().splitlines()) if p.exists() else 0

def test_kill9_and_resume_matches_uninterrupted(tmp_path):
    full, killed = tmp_path/"full", tmp_path/"killed"
    p = _run(full); out, err = p.communicate(timeout=900)
    assert p.returncode == 0, err.decode()[-2000:]
    ref = _records(full)
    assert len(ref) == 13 and len({r["id"] for r in ref}) == 13

    # kill -9 once a few chunks are written (the run has 7 chunks)
    samples = killed/"r"/"synthesis"/"samples.jsonl"
    p = _run(killed); t0 = time.time()
    while _lines(samples) < 3 and p.poll() is None and time.time() - t0 < 300: time.sleep(0.02)
    assert p.poll() is None, "the run finished before it could be killed"
    os.kill(p.pid, signal.SIGKILL); p.wait()
    n_before = _lines(samples)
    assert 0 < n_before < 13
    assert not (killed/"r"/"synthesis"/"done.json").exists()
    # a torn last line, as if the kill had landed inside a write
    with open(samples, "a") as f: f.write('{"id": "torn", "task": "mc')

    p = _run(killed); out, err = p.communicate(timeout=900)
    assert p.returncode == 0, err.decode()[-2000:]
    got = _records(killed)
    assert len(got) == len({r["id"] for r in got}) == 13           # no duplicates, torn line gone
    key = lambda r: r["id"]
    assert sorted(got, key=key) == sorted(ref, key=key)            # exactly the uninterrupted records

def test_params_files_validate():
    from omind.core import load_params
    for f in ("params/smoke.yaml", "params/tiny.yaml", "params/paper.yaml"):
        P = load_params(ROOT/f, check_paths=False)
        S = P.synthesis
        assert S.turns_min >= 1 and S.turns_min <= S.turns_max
        assert set(S.n) <= set(BUILTIN)
    P = load_params(ROOT/"params/smoke.yaml")
    total = sum(P.synthesis.count(t) for t in BUILTIN)
    # the 10-minute smoke target asks for >= 200 kept samples; review keeps ~89% (227 of 256 in the smoke run), so
    # the seeds must allow >= 200 even at an 85% keep rate
    assert total * 0.85 >= 200 and all(P.synthesis.count(t) > 0 for t in BUILTIN)

def test_bad_params_named(tmp_path):
    from omind.core import load_params, ParamsError
    bad = tmp_path/"bad.yaml"
    bad.write_text("synthesis:\n  n: {mcqa: 2, convo: 3}\n")
    with pytest.raises(ParamsError, match=r"synthesis\.n.*unknown task family 'convo' \(did you mean 'conversation'\?\)"): load_params(bad)
    bad.write_text("synthesis:\n  n: {mcqa: -2}\n")
    with pytest.raises(ParamsError, match=r"synthesis\.n.*>= 0"): load_params(bad)
    bad.write_text("synthesis:\n  sources: {clasification: [{path: x.csv, layout: dreaddit}]}\n")
    with pytest.raises(ParamsError, match=r"did you mean 'classification'"): load_params(bad)
    bad.write_text("synthesis:\n  sources: {mcqa: [{path: x.csv, layout: dreaddit}]}\n")
    with pytest.raises(ParamsError, match=r"mcqa\.0\.layout.*'dreaddit' gives post items"): load_params(bad)
    bad.write_text("synthesis:\n  mcqa_file: medmcqa.jsonl\n")           # the old single-file keys are gone
    with pytest.raises(ParamsError, match=r"unknown key 'synthesis.mcqa_file'"): load_params(bad)

def _none(**over):
    return {**{t: 0 for t in BUILTIN}, **over}

def test_source_datasets_seed_families():
    "Source datasets in their published layouts seed each family; every augmented seed keeps its gold answer and names source and row."
    from omind.synthesis import SynthesisParams, make_seeds
    from omind.testing import toy_knowledge
    from omind.tasks import LETTERS
    kb = toy_knowledge()
    S = SynthesisParams(n=_none(mcqa=2), sources={
        "mcqa": [{"path": str(FX/"medmcqa_original.jsonl"), "layout": "medmcqa"},
                 {"path": str(FX/"mmlu_professional_psychology_test.csv"), "layout": "mmlu", "n": 2}],
        "classification": [{"path": str(FX/"dreaddit_test.csv"), "layout": "dreaddit"}],
        "root_cause": [{"path": str(FX/"cams_train.csv"), "layout": "cams"}],
        "qa": [{"path": str(FX/"mentalchat16k_train.jsonl"), "layout": "mentalchat16k"}],
        "conversation": [{"path": str(FX/"esconv.json"), "layout": "esconv"}]})
    sd, rep = make_seeds(kb, S, 0, verbose=False)
    # knowledge-base seeds first (ids 0, 1), then the sources, numbered on
    assert [s["kind"] for s in sd["mcqa"][:2]] != ["source", "source"] and sd["mcqa"][2]["kind"] == "source"
    assert [s["id"].split("-")[1] for s in sd["mcqa"][:3]] == ["00000", "00001", "00002"]
    for s in sd["mcqa"]: assert s["options"][LETTERS.index(s["answer"])] == s["answer_text"]
    src = [s for s in sd["mcqa"] if s["kind"] == "source"]
    assert all(s["source"]["row"] is not None and s["source"]["dataset"] for s in src)
    assert rep["mcqa"]["sources"][1]["seeded"] == 2 and rep["mcqa"]["sources"][1]["requested"] == 2
    # MedMCQA's original release (cop 1-4) and the Hugging Face copy (cop 0-3) give the same gold answers
    hf, _ = make_seeds(kb, SynthesisParams(n=_none(), sources={"mcqa": [{"path": str(FX/"medmcqa_hf.jsonl"), "layout": "medmcqa"}]}), 0, verbose=False)
    orig = [s for s in src if "medmcqa_original" in s["source"]["dataset"]]
    assert [(s["question"], s["answer_text"]) for s in orig] == [(s["question"], s["answer_text"]) for s in hf["mcqa"]]
    assert orig[0]["answer_text"] == "SSRIs"
    # Dreaddit labels are named; CAMS causes too
    assert {s["label"] for s in sd["classification"]} <= {"stressed", "not stressed"}
    assert set(sd["classification"][0]["candidates"]) == {"stressed", "not stressed"}
    assert all(s["post"] for s in sd["classification"] + sd["root_cause"])
    assert {s["label"] for s in sd["root_cause"]} <= {"No reason", "Bias or abuse", "Jobs and careers", "Medication", "Relationship", "Alienation"}
    # QA keeps its question and grounds the answer in the reference; conversations keep situation and opening
    assert sd["qa"][0]["question"] and sd["qa"][0]["evidence"][0]["text"]
    assert sd["conversation"][0]["opening"] and sd["conversation"][0]["cause"].startswith("I lost my job")

def test_source_gold_survives_synthesis(tmp_path):
    "An augmented MCQA record's target is the source's gold answer; the record names its source and row."
    from omind.synthesis import SynthesisParams, make_seeds, synthesize_chunk
    from omind.testing import toy_knowledge, ToyRetriever
    kb = toy_knowledge()
    S = SynthesisParams(n=_none(), k=3, k_chunks=0, sources={"mcqa": [{"path": str(FX/"medmcqa_original.jsonl"), "layout": "medmcqa"}]})
    sd, _ = make_seeds(kb, S, 0, verbose=False)
    class Teacher:
        name = "scripted"
        def chat(self, convs, cfg=None, progress=False):
            return ["F1" if "Which facts help" in c[-1]["content"] else "This is the right answer because the facts say so [F1]." for c in convs]
    recs = synthesize_chunk(sd["mcqa"], Teacher(), ToyRetriever(kb), kb, S)
    for r in recs:
        assert r["status"] == "ok", r["error"]
        assert r["messages"][-1]["content"].startswith(f"{r['seed']['answer']}. {r['seed']['answer_text']}")
        assert r["seed"]["source"]["row"] is not None
    assert recs[0]["messages"][-1]["content"].startswith("B. SSRIs") or recs[0]["seed"]["answer_text"] == "SSRIs"

def test_counts_are_honest():
    "Asking for more unique seeds than the knowledge base has fails with the family, the capacity and the params key."
    from omind.synthesis import SynthesisParams, make_seeds, SeedShortfall
    from omind.testing import toy_knowledge
    kb = toy_knowledge()
    _, rep = make_seeds(kb, SynthesisParams(n=_none(root_cause=1)), 0, verbose=False)
    cap = rep["root_cause"]["capacity"]
    with pytest.raises(SeedShortfall, match=rf"'root_cause'.*synthesis\.n\.root_cause asks for {cap + 5}.*at most {cap}"):
        make_seeds(kb, SynthesisParams(n=_none(root_cause=cap + 5)), 0, verbose=False)
    sd, rep = make_seeds(kb, SynthesisParams(n=_none(root_cause=cap + 5), allow_shortfall=True), 0, verbose=False)
    assert rep["root_cause"]["shortfall"] >= 5 and len(sd["root_cause"]) == cap + 5 - rep["root_cause"]["shortfall"]
    keys = [(s["label"], s["persona"], s["cause"]) for s in sd["root_cause"]]
    assert len(keys) == len(set(keys))                              # no two seeds share a prompt
    # a request within capacity is met exactly, with unique prompts, although the generator repeats itself
    sd, rep = make_seeds(kb, SynthesisParams(n=_none(qa=24)), 0, verbose=False)
    assert len(sd["qa"]) == 24 == len({s["question"] for s in sd["qa"]}) and rep["qa"]["duplicates_dropped"] > 0

def test_seeds_from_real_knowledge_base():
    "Seeds for every family come from the default knowledge base (its structure, no model calls), unique and with correct gold."
    from omind.core import load_params
    from omind.synthesis import make_seeds
    from omind.tasks import LETTERS
    from omind.knowledge import build_knowledge
    P = load_params(ROOT/"params/smoke.yaml")
    kb = build_knowledge(P.knowledge)
    sd, rep = make_seeds(kb, P.synthesis, 0, verbose=False)
    for t, ss in sd.items():
        assert len(ss) == P.synthesis.count(t), t
        assert rep[t]["capacity"] >= len(ss) and rep[t]["shortfall"] == 0
    for m in sd["mcqa"]: assert m["options"][LETTERS.index(m["answer"])] == m["answer_text"]
    assert len({m["question"] for m in sd["mcqa"] + sd["qa"]}) == len(sd["mcqa"]) + len(sd["qa"])
    Pp = load_params(ROOT/"params/paper.yaml", check_paths=False).synthesis            # paper's knowledge-base counts fit its capacity
    for t in ("mcqa", "root_cause", "qa"): assert Pp.count(t) <= rep[t]["capacity"], t
    from omind.synthesis import SynthesisParams, SeedShortfall
    with pytest.raises(SeedShortfall, match=r"synthesis\.n\.qa asks for 57000 seeds but the knowledge base allows at most"):
        make_seeds(kb, SynthesisParams(n={"mcqa": 0, "classification": 0, "root_cause": 0, "qa": 57000, "conversation": 0}), 0, verbose=False)

@pytest.fixture
def sixth_family():
    "The toy task family of omind.testing, registered in one place for the test and removed afterwards."
    from omind.tasks import register, unregister
    from omind.testing import toy_task_family
    fam = register(toy_task_family())
    yield fam
    unregister(fam.name)

def test_sixth_family_runs_through_synthesis(tmp_path, sixth_family):
    "A family registered with one call is validated in params, seeded, generated on the tiny model and counted."
    from omind.core import load_params, ParamsError
    from omind.synthesis import run_synthesis
    from omind.testing import toy_knowledge, ToyRetriever
    from omind.tasks import task_names, get_task
    assert task_names()[-1] == "true_false"
    over = {"run": {"name": "t6", "results_dir": str(tmp_path)}, "models": {"default": {"model": "embedded:tiny-random", "batch_size": 8}},
            "synthesis": {"n": {**_none(mcqa=2), "true_false": 4}, "max_new_tokens": 12, "explain_max_new_tokens": 12,
                          "prune_max_new_tokens": 6, "chunk_size": 4}}
    P = load_params(None, over)
    kb = toy_knowledge()
    s = run_synthesis(P, kb=kb, retriever=ToyRetriever(kb), progress=False)
    assert s["seeded"] == {**_none(mcqa=2), "true_false": 4}
    assert [r["task"] for r in s["counts"]] == [*BUILTIN, "true_false"]
    recs = [json.loads(l) for l in (tmp_path/"t6"/"synthesis"/"samples.jsonl").read_text().splitlines()]
    tf = [r for r in recs if r["task"] == "true_false"]
    assert len(tf) == 4 and all(r["label"] in ("Yes", "No") and r["prompt_hash"] for r in tf)
    fam = get_task("true_false")
    for r in tf:
        if r["status"] == "ok": assert fam.validate(r) == ""
    # without the registration the same params are an error naming the key
    from omind.tasks import unregister, register
    unregister("true_false")
    try:
        with pytest.raises(ParamsError, match=r"synthesis\.n.*unknown task family 'true_false'"): load_params(None, over)
    finally: register(sixth_family)
