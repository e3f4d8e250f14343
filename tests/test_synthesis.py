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
                                         "turns_min": 3, "turns_max": 4, "heldout": {"n_mcqa": 6, "n_classification": 4, "n_transfer": 4}}})
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
        C = S.of("conversation"); assert C.turns_min >= 1 and C.turns_min <= C.turns_max
        assert set(S.n) <= set(BUILTIN)
    P = load_params(ROOT/"params/smoke.yaml")
    total = sum(P.synthesis.count(t) for t in BUILTIN)
    # smoke spends most of its 30 minutes on evidence (held-out sets under three models); of what synthesis gets, most
    # goes to the knowledge-bearing families built in code (MCQA, classification), and every family is exercised
    kb_bearing = P.synthesis.count("mcqa") + P.synthesis.count("classification")
    assert total >= 100 and kb_bearing >= 0.75 * total and all(P.synthesis.count(t) > 0 for t in BUILTIN)

def test_bad_params_named(tmp_path):
    from omind.core import load_params
    from omind.params_file import ParamsError
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
    from omind.testing import toy_knowledge, ToyRetriever, FakeLLM
    kb = toy_knowledge()
    S = SynthesisParams(n=_none(), k=3, k_chunks=0, sources={"mcqa": [{"path": str(FX/"medmcqa_original.jsonl"), "layout": "medmcqa"}]})
    sd, _ = make_seeds(kb, S, 0, verbose=False)
    teacher = FakeLLM(["This is the right answer because the facts say so [F1]."], prune="F1")
    recs = synthesize_chunk(sd["mcqa"], teacher, ToyRetriever(kb), kb, S)
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
    from omind.kb_build import build_knowledge
    P = load_params(ROOT/"params/smoke.yaml")
    kb = build_knowledge(P.knowledge)
    sd, rep = make_seeds(kb, P.synthesis, 0, verbose=False)
    for t, ss in sd.items():
        assert len(ss) == P.synthesis.count(t), t
        assert rep[t]["capacity"] >= len(ss) and rep[t]["shortfall"] == 0
    for m in sd["mcqa"]: assert m["options"][LETTERS.index(m["answer"])] == m["answer_text"]
    assert len({m["question"] for m in sd["mcqa"] + sd["qa"]}) == len(sd["mcqa"]) + len(sd["qa"])
    Pp = load_params(ROOT/"params/paper.yaml", check_paths=False).synthesis            # paper's knowledge-base counts fit its capacity
    for t in ("mcqa", "root_cause"): assert Pp.count(t) <= rep[t]["capacity"], t          # (its 57k open QA need the UMLS-scale knowledge base)
    from omind.synthesis import SynthesisParams, SeedShortfall
    with pytest.raises(SeedShortfall, match=r"synthesis\.n\.qa asks for 57000 seeds but the knowledge base allows at most"):
        make_seeds(kb, SynthesisParams(n={"mcqa": 0, "classification": 0, "root_cause": 0, "qa": 57000, "conversation": 0}), 0, verbose=False)

def test_sixth_family_runs_through_synthesis(tmp_path, sixth_family):
    "A family registered with one call is validated in params, seeded, generated on the tiny model and counted."
    from omind.core import load_params
    from omind.params_file import ParamsError
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

# --- the paper's data path: published source datasets in, a dataset whose augmented records keep their gold out

PAPER_SOURCES = """\
run: {{name: src, results_dir: {results}, seed: 0}}
models:
  default: {{model: "embedded:tiny-random", batch_size: 16}}
knowledge: {{icd10: false, eval_queries: 8}}
synthesis:
  n: {{mcqa: 1, classification: 0, root_cause: 0, qa: 0, conversation: 0}}   # the knowledge base: one source among others
  sources:
    mcqa:
      - {{path: {data}/medmcqa/train.jsonl, layout: medmcqa, split: train, n: 2}}          # MedMCQA's JSONL release (cop 1-4)
      - {{path: {data}/mmlu/professional_psychology_test.csv, layout: mmlu, config: professional_psychology, split: test}}
    classification:
      - {{path: {data}/dreaddit/dreaddit-test.csv, layout: dreaddit, split: test, n: 3}}
    qa:
      - {{path: {data}/mentalchat16k/train.jsonl, layout: mentalchat16k, n: 2}}
    conversation:
      - {{path: {data}/esconv/ESConv.json, layout: esconv, n: 1}}
  k: 3
  k_chunks: 1
  chunk_size: 8
  max_new_tokens: 16
  explain_max_new_tokens: 12
  client_max_new_tokens: 8
  prune_max_new_tokens: 6
  turns_min: 2
  turns_max: 2
review: {{nli_scoring: first_token, max_regenerations: 0, min_chars: 1, max_chars: 100000, chunk_size: 16}}
dataset: {{validation_share: 0.1, test_share: 0.1, dpo_share: 0.0}}
"""

def test_published_sources_knowledge_to_dataset(tmp_path):
    """A params file naming local copies of MedMCQA (JSONL), MMLU psychology (CSV without header), Dreaddit (CSV),
    MentalChat16K (JSONL) and ESConv (JSON) runs knowledge -> synthesis -> review -> dataset on the tiny model; every
    augmented record keeps its original gold answer and names its source and row."""
    import shutil
    from omind.core import load_params, run_dir, read_jsonl
    from omind.knowledge import run_knowledge
    from omind.synthesis import run_synthesis
    from omind.review import run_review
    from omind.dataset import run_dataset, load_splits, provenance_of
    from omind.sources import SourceSpec, load_source
    from omind.core import portable_path
    copies = {"medmcqa/train.jsonl": "medmcqa_original.jsonl", "mmlu/professional_psychology_test.csv": "mmlu_professional_psychology_test.csv",
              "dreaddit/dreaddit-test.csv": "dreaddit_test.csv", "mentalchat16k/train.jsonl": "mentalchat16k_train.jsonl",
              "esconv/ESConv.json": "esconv.json"}
    for dst, src in copies.items():
        (tmp_path/"data"/dst).parent.mkdir(parents=True, exist_ok=True); shutil.copy(FX/src, tmp_path/"data"/dst)
    pf = tmp_path/"sources.yaml"; pf.write_text(PAPER_SOURCES.format(results=tmp_path/"results", data=tmp_path/"data"))
    P = load_params(pf)
    # the gold of every row of every source, read independently of synthesis
    gold = {}
    for fam, specs in P.synthesis.sources.items():
        for sp in specs:
            full = SourceSpec(**{**sp.model_dump(), "n": None})
            for it in load_source(full, verbose=False):
                gold[(it["source"]["dataset"], it["source"]["row"])] = it
    run_knowledge(P, progress=False)
    s = run_synthesis(P, progress=False)
    rep = s["seed_report"]
    assert rep["mcqa"]["capacity"] >= 1 and rep["mcqa"]["seeded"] == 1 + 2 + 4
    assert [x["seeded"] for x in rep["mcqa"]["sources"]] == [2, 4] and rep["conversation"]["sources"][0]["seeded"] == 1
    recs = read_jsonl(run_dir(P, "synthesis")/"samples.jsonl")
    assert len(recs) == s["n"] == 1 + 2 + 4 + 3 + 2 + 1

    def check(task, seed, label, messages):
        "The record keeps the gold of the source row it names."
        src = seed["source"]
        assert src["dataset"] in {portable_path(sp.path) for sps in P.synthesis.sources.values() for sp in sps} and src["row"] is not None and src["split"]
        assert not src["dataset"].startswith("/")                          # no absolute path of this machine
        g = gold[(src["dataset"], src["row"])]
        if task == "mcqa":
            assert (seed["question"], seed["options"], seed["answer_text"]) == (g["question"], g["options"], g["options"][g["answer"]])
            assert label == g["label"] == seed["answer"]
            if messages and messages[-1]["role"] == "assistant": assert messages[-1]["content"].startswith(f"{g['label']}. {seed['answer_text']}")
        elif task == "classification":
            assert (seed["post"], label) == (g["text"], g["label"])
            if messages and messages[-1]["role"] == "assistant": assert messages[-1]["content"].startswith(f"Label: {g['label']}")
        elif task == "qa":
            assert (seed["question"], seed["reference"]) == (g["question"], g["answer"])
        elif task == "conversation":
            assert (seed["situation"], seed["emotion"], seed["problem"]) == (g["situation"], g["emotion"], g["problem"])
            first = next(m for m in messages if m["role"] == "user")          # the client's opening is the source's
            assert first["content"] == next(t["content"] for t in g["turns"] if t["role"] == "user")
        return True

    from_sources = [r for r in recs if r["seed"].get("source")]
    assert len(from_sources) == len(recs) - 1 and all(check(r["task"], r["seed"], r["label"], r["messages"]) for r in from_sources)
    # the MedMCQA explanation and the MentalChat16K answer are used: as evidence, and as the draft the teacher grounds
    assert all(any(e["id"].startswith("ref:") for e in r["evidence"]) for r in from_sources if r["seed"].get("reference"))
    qa = [r for r in recs if r["task"] == "qa"]
    assert qa and all(r["prompt_hash"] for r in qa)
    run_review(P)
    run_dataset(P)
    dd = load_splits(run_dir(P, "dataset"))
    rows = [r for sp in dd for r in dd[sp]]
    kept = [r for r in rows if provenance_of(r)["seed"].get("source")]
    assert kept, "review kept no augmented record"
    for r in kept:
        check(r["task"], provenance_of(r)["seed"], r["label"], r["messages"])


def test_paper_params_follow_the_paper_offline(monkeypatch):
    "params/paper.yaml names the public source sets per family, top 10 triplets and chunks, a judge that is not the teacher; it loads without network."
    import socket
    from omind.core import load_params
    def refuse(self, *a, **k): raise OSError("network disabled in this test")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    P = load_params(ROOT/"params/paper.yaml", check_paths=False)                          # its UMLS and notes folders are the user's
    S = P.synthesis
    hubs = {t: {sp.hub for sp in S.sources.get(t, [])} for t in BUILTIN}
    assert {"openlifescienceai/medmcqa", "cais/mmlu"} <= hubs["mcqa"] and "andreagasparini/dreaddit" in hubs["classification"]
    assert "ShenLab/MentalChat16K" in hubs["qa"] and "thu-coai/esconv" in hubs["conversation"]
    assert {sp.config for sp in S.sources["mcqa"] if sp.hub == "cais/mmlu"} == {"high_school_psychology", "professional_psychology"}
    assert all(sp.split != "test" for sps in S.sources.values() for sp in sps)          # test splits are for evaluation only
    assert (S.k, S.k_chunks) == (10, 10)
    assert P.models["teacher"].model != P.models["judge"].model and "nli" not in P.models and P.review.nli_model   # NLI: a local classifier
    sets = {(s.hub, s.config, s.split) for s in P.evaluate.public_sets}
    assert ("cais/mmlu", "professional_psychology", "test") in sets and ("andreagasparini/dreaddit", None, "test") in sets
    assert not sets & {(sp.hub, sp.config, sp.split) for sps in S.sources.values() for sp in sps}   # no eval set is a seed set


def test_identical_prompts_are_one_call():
    "Identical prompts in a chunk reach the teacher once; both records get the same reply."
    import copy
    from omind.synthesis import SynthesisParams, make_seeds, synthesize_chunk
    from omind.testing import toy_knowledge, ToyRetriever, FakeLLM
    kb = toy_knowledge()
    S = SynthesisParams(n=_none(), k=3, k_chunks=0, sources={"mcqa": [{"path": str(FX/"medmcqa_original.jsonl"), "layout": "medmcqa", "n": 1}]})
    sd, _ = make_seeds(kb, S, 0, verbose=False)
    twin = copy.deepcopy(sd["mcqa"][0]); twin["id"] += "-twin"
    teacher = FakeLLM(["It is correct because the facts say so [F1]."], prune="F1")
    recs = synthesize_chunk([sd["mcqa"][0], twin], teacher, ToyRetriever(kb), kb, S)
    sent = [json.dumps(c, sort_keys=True) for batch in teacher.sent for c in batch]
    assert len(sent) == len(set(sent)) == 2                         # one pruning and one explanation prompt, not four
    assert recs[0]["messages"] == recs[1]["messages"] and recs[0]["id"] != recs[1]["id"]
