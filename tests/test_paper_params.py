"""The shipped params files: a judge is never the teacher's model where real models are named, and params/paper.yaml
names every source of the paper's recipe, sized offline (size table or `n`) to totals within 5% of the paper's."""
from pathlib import Path
import pytest
from omind.core import load_params

ROOT = Path(__file__).resolve().parents[1]
PARAMS = sorted(f for f in (ROOT/"params").glob("*.yaml") if not f.name.endswith("-sweep.yaml"))   # sweep files: omind.sweep

def roles(P):
    "(teacher spec, judge spec) of a params file: synthesis.role and evaluate.judge_role."
    return P.model(P.synthesis.role), P.model(P.evaluate.judge_role)

@pytest.mark.parametrize("f", PARAMS, ids=lambda f: f.name)
def test_judge_is_not_the_teacher(f):
    P = load_params(f, check_paths=False)
    teacher, judge = roles(P)
    if teacher.model.startswith("embedded:") and judge.model.startswith("embedded:"): return   # the offline default: one model in every role
    assert judge.model != teacher.model, f"{f.name}: the judge ({judge.model}) grades its own teacher's writing"

def test_every_file_checked():
    assert {"paper.yaml", "paper-open.yaml", "paper-mini.yaml", "smoke.yaml"} <= {f.name for f in PARAMS}

def test_open_variant_judge_of_another_family():
    P = load_params(ROOT/"params"/"paper-open.yaml", check_paths=False)
    teacher, judge = roles(P)
    fam = lambda m: m.split("/")[0].lower()
    assert fam(teacher.model) != fam(judge.model) and teacher.backend == judge.backend == "openai"
    assert P.synthesis.sources == load_params(ROOT/"params"/"paper.yaml", check_paths=False).synthesis.sources

def test_paper_recipe_sized_offline():
    from omind.plan import load_size_table, planned_source, plan_totals
    P = load_params(ROOT/"params"/"paper.yaml", check_paths=False)
    table = load_size_table()
    assert P.model("teacher").model == "gpt-4o-mini" and P.model("judge").model != "gpt-4o-mini" and "nli" not in P.models
    fid = [{"family": fam, "source": "knowledge base", "planned": P.synthesis.count(fam)} for fam in P.synthesis.n]
    for fam, specs in P.synthesis.sources.items():
        for sp in specs:
            r = planned_source(sp, table)
            assert r["planned"] is not None and r["paper"] is not None, sp.label       # every source sized, every paper count known
            assert table["sources"][sp.label]["family"] == fam, sp.label
            if sp.hub and sp.label not in ("mhqa", "dreaddit"): assert sp.revision and len(sp.revision) == 40, sp.label
            if sp.path: assert sp.access, sp.label                                     # a set not on the Hub says how to get it
            fid.append({"family": fam, **r})
    assert {r["source"] for r in fid} >= set(table["sources"])                         # every set of the paper's recipe is named
    t = plan_totals(P, fid, table)
    assert abs(t["samples"] / 164_000 - 1) <= 0.05 and abs(t["dpo_pairs"] / 20_000 - 1) <= 0.05, t
    assert t["rejected_per_instance"] == 2
