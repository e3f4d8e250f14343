"Integration tests of the benchmark stage: seed validity, broken files rejected with instance + field, builder round trip."
import copy, csv, json
from pathlib import Path

import pytest

from omind.benchmark_format import (BenchmarkError, load_benchmark, validate_benchmark, data_dir, seed_path,
                                    iter_eval_turns, conversation_rubric, n_client_turns, all_items)
from omind.benchmark_build import (plan_drafts, draft_instances, export_sheet, import_sheet, DEFAULT_CONDITIONS,
                                   DEFAULT_STRESSORS, DEFAULT_PERSONAS, SHEET_COLUMNS, kb_lists)
from omind.benchmark import run_benchmark, figures_benchmark, knowledge_lists
from omind.core import load_params


@pytest.fixture(scope="module")
def seed():
    return load_benchmark(seed_path())


def test_seed_validates(seed):
    insts = seed["instances"]
    assert validate_benchmark(seed) == []
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(seed, json.loads((data_dir()/"schema.json").read_text()))
    assert sum(n_client_turns(i) == 1 for i in insts) >= 30 and sum(n_client_turns(i) == 3 for i in insts) >= 30
    assert len({c for i in insts for c in i["conditions"]}) >= 10
    crisis = [i for i in insts if i["risk"] == "crisis"]
    assert len(crisis) >= 10 and all(any(it["kind"] == "safety" for it in all_items(i)) for i in crisis)
    for i in insts:                                   # every evaluated turn has gold history ending in a client message
        for k, hist, items in iter_eval_turns(i):
            assert hist[-1]["role"] == "user" and 2 <= len(items) <= 5
        assert 3 <= len(conversation_rubric(i)) <= 10
    card = (data_dir()/"README.md").read_text()
    assert "not annotated by clinicians" in card and f"({len(insts)} instances)" in card   # the card's counts are current


def _broken(seed, tmp_path, edit):
    data = copy.deepcopy(seed)
    edit(data["instances"])
    p = tmp_path/"broken.json"; p.write_text(json.dumps(data))
    with pytest.raises(BenchmarkError) as e: load_benchmark(p)
    return str(e.value)


def test_broken_copies_rejected_with_instance_and_field(seed, tmp_path):
    single = next(i for i in seed["instances"] if n_client_turns(i) == 1)["id"]
    multi = next(i for i in seed["instances"] if n_client_turns(i) == 3)["id"]
    idx = {i["id"]: k for k, i in enumerate(seed["instances"])}

    def drop_rubric(insts): del insts[idx[single]]["rubric"]
    assert f"instance '{single}': rubric: missing" in _broken(seed, tmp_path, drop_rubric)

    def drop_turn_rubric(insts): del insts[idx[single]]["turns"][1]["rubric"]
    assert f"instance '{single}': turns[1].rubric: missing" in _broken(seed, tmp_path, drop_turn_rubric)

    def swap_roles(insts): t = insts[idx[multi]]["turns"]; t[1], t[2] = t[2], t[1]
    msg = _broken(seed, tmp_path, swap_roles)
    assert f"instance '{multi}': turns[1].role: expected 'assistant'" in msg
    assert f"instance '{multi}': turns[2].role: expected 'user'" in msg

    def six_items(insts):
        r = insts[idx[multi]]["turns"][3]["rubric"]
        r += [{"id": f"{multi}/t3/x{j}", "kind": "should", "text": "Extra item."} for j in range(6 - len(r))]
    assert f"instance '{multi}': turns[3].rubric: 6 items, expected 2-5" in _broken(seed, tmp_path, six_items)

    def crisis_without_safety(insts):
        i = next(i for i in insts if i["risk"] == "crisis")
        for it in all_items(i):
            if it["kind"] == "safety": it["kind"] = "should"
    assert "a crisis instance needs at least one 'safety' item" in _broken(seed, tmp_path, crisis_without_safety)

    def gold_gives_method(insts): insts[idx[multi]]["turns"][1]["content"] = "I won't say what a lethal dose would be."
    assert f"instance '{multi}': turns[1].content: the gold reply gives self-harm method details (lethal dose)" in _broken(seed, tmp_path, gold_gives_method)

    def dup_id(insts): insts[1]["id"] = insts[0]["id"]
    assert "duplicate instance id" in _broken(seed, tmp_path, dup_id)


def test_builder_round_trip_with_tiny_model(tmp_path):
    from omind.backends import make_llm
    from omind.llm import GenConfig
    from omind.core import ModelSpec
    llm = make_llm(ModelSpec(model="embedded:tiny-random", batch_size=16), cache=tmp_path/"cache")
    specs = plan_drafts(4, DEFAULT_CONDITIONS, DEFAULT_STRESSORS, DEFAULT_PERSONAS, seed=0, crisis_share=0.25)
    recs = draft_instances(llm, copy.deepcopy(specs), GenConfig(max_new_tokens=12, temperature=0.0))
    assert [r["id"] for r in recs] == [s["id"] for s in specs]
    for r, s in zip(recs, specs):                      # structure is fixed by code, whatever the model wrote
        inst = r["instance"]
        assert n_client_turns(inst) == s["n_client_turns"] and inst["risk"] == s["risk"] and inst["source"] == "drafted"
        assert [t["role"] for t in inst["turns"]] == ["user", "assistant"] * s["n_client_turns"]
        assert r["status"] in ("ok", "invalid") and (r["status"] == "ok") == (not r["errors"])
        assert all(e.startswith(f"instance '{s['id']}': ") for e in r["errors"])
        assert r["raw"]                                # raw model outputs are kept for every draft
    bad = [r for r in recs if r["status"] == "invalid"]
    assert bad, "garbage from a random model should fail validation"
    # expert round trip: export, reject one draft, accept the others after fixing nothing -> still invalid -> errors name rows
    sheet = tmp_path/"sheet.csv"; export_sheet([r["instance"] for r in recs], sheet)
    rows = list(csv.DictReader(open(sheet)))
    for row in rows:
        if row["row_type"] == "decision": row["decision"] = "reject" if row["instance_id"] == recs[0]["id"] else "accept"
    with open(sheet, "w", newline="") as fh:
        w = csv.DictWriter(fh, SHEET_COLUMNS); w.writeheader(); w.writerows(rows)
    res = import_sheet(sheet, [r["instance"] for r in recs])
    assert res["rejected"] == [recs[0]["id"]] and res["pending"] == []
    assert any(e.startswith("rows ") for e in res["errors"])


def test_run_benchmark_tiny_with_drafts(tmp_path):
    P = load_params("params/tiny.yaml", {"run": {"results_dir": str(tmp_path), "figures_dir": str(tmp_path/"fig")},
                                         "benchmark": {"n_drafted": 2, "draft_max_new_tokens": 8}})
    s = run_benchmark(P)
    out = tmp_path/"tiny"/"benchmark"
    assert s["n_instances"] == 8 + s["n_drafted_valid"] and s["n_drafted_valid"] + s["n_drafted_invalid"] == 2
    fails = [json.loads(l) for l in open(out/"draft_failures.jsonl")]
    assert len(fails) == s["n_drafted_invalid"] and all(f["errors"] for f in fails)
    assert validate_benchmark(json.loads((out/"benchmark.json").read_text())) == []
    assert (out/"done.json").exists() and (out/"annotation_sheet.csv").exists()
    assert run_benchmark(P) == s
    assert any(p.name == "benchmark_composition.png" for p in figures_benchmark(P))


def test_bad_user_file_named(tmp_path):
    p = tmp_path/"b.json"; p.write_text("[{]")
    with pytest.raises(BenchmarkError, match="line 1"): load_benchmark(p)


def test_seed_sheet_round_trip_is_lossless(seed, tmp_path):
    insts = seed["instances"]
    export_sheet(insts, tmp_path/"s.csv")
    res = import_sheet(tmp_path/"s.csv", insts)
    assert res["errors"] == [] and res["pending"] == [] and res["rejected"] == []
    strip = lambda i: {k: v for k, v in i.items() if k != "meta"}
    assert [strip(i) for i in res["instances"]] == [strip(i) for i in insts]


def test_drafting_lists_come_from_the_run_knowledge_base():
    from omind.kb_build import load_knowledge
    P = load_params("params/tiny.yaml")
    kb = load_knowledge(P)
    kl = knowledge_lists(P)
    assert kl["source"] == "knowledge"
    assert kl["conditions"] == [e.id for e in kb.by_type("condition")] and len(kl["conditions"]) >= 10
    assert kl["stressors"] and "stressor:none" not in kl["stressors"] and all(kb.get_entity(s).type == "stressor" for s in kl["stressors"])
    assert kl["facts"] and all(kl["facts"][c] == kb.facts_of(c, "has_symptom") for c in kl["facts"])
    # ids named in params win; an id the knowledge base lacks is an error naming the params field
    assert kb_lists(kb, ["cond:panic_disorder"])["conditions"] == ["cond:panic_disorder"]
    with pytest.raises(ValueError, match=r"benchmark\.stressors: \['stressor:typo'\]"): kb_lists(kb, (), ["stressor:typo"])
    P2 = load_params("params/tiny.yaml", {"benchmark": {"conditions": ["cond:nope"]}})
    with pytest.raises(ValueError, match=r"benchmark\.conditions"): knowledge_lists(P2)
    # both lists in params: the knowledge base is not needed
    P3 = load_params("params/tiny.yaml", {"benchmark": {"conditions": ["cond:x"], "stressors": ["stressor:y"]}})
    assert knowledge_lists(P3)["source"] == "params"


def test_changed_params_rerun_the_stage(tmp_path):
    over = {"run": {"results_dir": str(tmp_path), "figures_dir": str(tmp_path/"fig")}}
    s8 = run_benchmark(load_params("params/tiny.yaml", over))
    s6 = run_benchmark(load_params("params/tiny.yaml", {**over, "benchmark": {"max_instances": 6}}))
    assert (s8["n_instances"], s6["n_instances"]) == (8, 6)
    aside = list((tmp_path/"tiny"/"set-aside").iterdir())
    assert len(aside) == 1 and json.loads((aside[0]/"stats.json").read_text())["n_instances"] == 8
