"Synthesis integration tests: kill -9 and resume gives exactly the uninterrupted records; params files; local seed files."
import json, os, signal, subprocess, sys, textwrap, time
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable

# A run of the synthesis stage with the tiny random model and the in-memory toy knowledge base, in its own
# process (so that it can be killed). Many small chunks, so that a kill lands part-way.
RUNNER = textwrap.dedent("""
    import sys, json, torch
    torch.set_num_threads(1)
    from omind.core import load_params
    from omind.synthesis import run_synthesis, ToyKnowledge
    P = load_params(None, {"run": {"name": "r", "results_dir": sys.argv[1], "seed": 3},
                           "models": {"default": {"model": "embedded:tiny-random", "batch_size": 8}},
                           "synthesis": {"n": dict(mcqa=4, classification=3, root_cause=2, qa=2, conversation=2),
                                         "chunk_size": 2, "max_new_tokens": 16, "explain_max_new_tokens": 12,
                                         "client_max_new_tokens": 8, "prune_max_new_tokens": 6, "temperature": 0.7,
                                         "turns_min": 3, "turns_max": 4}})
    kb = ToyKnowledge()
    s = run_synthesis(P, kb=kb, retriever=kb, progress=False)
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
    for f in ("params/smoke.yaml", "params/tiny.yaml"):
        P = load_params(ROOT/f)
        S = P.synthesis
        assert S.turns_min >= 1 and S.turns_min <= S.turns_max
    P = load_params(ROOT/"params/smoke.yaml")
    total = sum(getattr(P.synthesis.n, t) for t in ("mcqa", "classification", "root_cause", "qa", "conversation"))
    # the 10-minute smoke target asks for >= 200 kept samples; review keeps ~89% (227 of 256 in the smoke run), so
    # the seeds must allow >= 200 even at an 85% keep rate
    assert total * 0.85 >= 200 and all(getattr(P.synthesis.n, t) > 0 for t in ("mcqa", "classification", "root_cause", "qa", "conversation"))

def test_bad_params_named(tmp_path):
    from omind.core import load_params, ParamsError
    bad = tmp_path/"bad.yaml"
    bad.write_text("synthesis:\n  n: {mcqa: 2, convo: 3}\n")
    with pytest.raises(ParamsError, match="synthesis.n.convo"): load_params(bad)
    bad.write_text("synthesis:\n  mcqa_file: /nonexistent/medmcqa.jsonl\n")
    with pytest.raises(ParamsError, match="mcqa_file"): load_params(bad)

def test_local_seed_files_drive_tasks(tmp_path):
    "Params that name local files take that task's seeds from them (fixtures in each public format)."
    from omind.core import load_params
    from omind.synthesis import make_seeds, kb_view, ToyKnowledge, SeedFileError, load_post_file
    (tmp_path/"medmcqa.jsonl").write_text("".join(json.dumps({"question": f"Q{i}?", "opa": "a", "opb": "b", "opc": "c", "opd": "d", "cop": i % 4}) + "\n" for i in range(5)))
    (tmp_path/"dreaddit.csv").write_text("subreddit,text,label\nanxiety,I cannot stop worrying about rent,1\nfood,Made soup today and it was great,0\n")
    (tmp_path/"cams.csv").write_text("text,cause,inference\nMy boss fired me today,2,fired\nMy girlfriend left me,4,left\n")
    (tmp_path/"mentalchat.jsonl").write_text(json.dumps({"instruction": "Answer as a counsellor.", "input": "I feel alone at college.", "output": "That is hard."}) + "\n")
    (tmp_path/"esconv.json").write_text(json.dumps([{"emotion_type": "sadness", "problem_type": "breakup", "situation": "My partner left.",
                                                      "dialog": [{"speaker": "seeker", "content": "Hi, I just got dumped."}]}]))
    P = load_params(None, {"synthesis": {"n": dict(mcqa=3, classification=2, root_cause=2, qa=1, conversation=1),
                                         "mcqa_file": str(tmp_path/"medmcqa.jsonl"), "classification_file": str(tmp_path/"dreaddit.csv"),
                                         "root_cause_file": str(tmp_path/"cams.csv"), "qa_file": str(tmp_path/"mentalchat.jsonl"),
                                         "conversation_file": str(tmp_path/"esconv.json")}})
    sd = make_seeds(kb_view(ToyKnowledge()), P.synthesis, 0)
    assert len(sd["mcqa"]) == 3 and all(s["kind"] == "local" for s in sd["mcqa"])
    assert {s["label"] for s in sd["root_cause"]} == {"Jobs and careers", "Relationship"}
    assert sd["classification"][0]["post"] and sd["qa"][0]["question"] == "I feel alone at college."
    assert sd["conversation"][0]["opening"] == "Hi, I just got dumped."
    (tmp_path/"bad.csv").write_text("body,score\nhello,1\n")
    with pytest.raises(SeedFileError, match=r"bad.csv: row 1: missing field 'text'"): load_post_file(tmp_path/"bad.csv", "classification")

@pytest.mark.skipif(not (ROOT/"omind"/"knowledge.py").exists(), reason="omind.knowledge not built yet")
def test_seeds_from_real_knowledge_base():
    "Seeds for every family can be built from the default knowledge base (its structure, no model calls)."
    from omind.core import load_params
    from omind.synthesis import make_seeds, kb_view, LETTERS
    from omind.knowledge import load_knowledge
    P = load_params(ROOT/"params/tiny.yaml")
    try: kb = load_knowledge(P)
    except FileNotFoundError as e: pytest.skip(f"knowledge stage not run for tiny: {e}")
    P2 = load_params(ROOT/"params/smoke.yaml")
    sd = make_seeds(kb_view(kb), P2.synthesis, 0)
    for t, ss in sd.items(): assert len(ss) == getattr(P2.synthesis.n, t), t
    for m in sd["mcqa"]: assert m["options"][LETTERS.index(m["answer"])] == m["answer_text"]
