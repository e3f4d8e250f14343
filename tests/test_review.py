"Integration tests of the review stage: bad input, unknown task families, kill-and-resume, HF NLI path, human review sheet (crisis rules: tests/test_safety.py)."
import csv, json
from pathlib import Path

import pytest

from omind.core import load_params, run_dir, read_jsonl, read_json
from omind.stages import finish_stage
from omind.review import run_review, review_records, ReviewParams, final_answer
from omind.review_sheet import export_review_sheet, import_review_sheet, apply_review_sheet, ReviewSheetError, SHEET_COLUMNS
from omind.model_store import tiny_nli_model_dir


def conv(user, assistant):
    return [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]

# ---------------------------------------------------------------- stage-level tests
def rec(i, task="qa", answer=None, user="What is depression?", **kw):
    r = {"id": f"s{i}", "task": task, "seed": {"entity": "cond:major_depressive_disorder"}, "query": user,
         "retrieved": [{"id": "t1", "score": 0.9, "text": "Major depressive disorder has symptom low mood."}],
         "evidence": [{"id": "t1", "text": "Major depressive disorder has symptom low mood."}], "prune": {"status": "ok", "raw": ""},
         "messages": conv(user, answer or f"Depression is a mood disorder, fact number {i}. It lowers mood for two weeks or more."),
         "label": "", "options": [], "cited": ["t1"], "teacher": "tiny", "prompt_hash": "h", "status": "ok", "error": ""}
    r.update(kw)
    return r

def setup_run(tmp_path, recs, review=None, text=None, **models):
    P = load_params(None, {"run": {"name": "t", "results_dir": str(tmp_path)},
                           "models": {"default": {"model": "embedded:tiny-random"}, **models},
                           "review": {"chunk_size": 4, "max_regenerations": 0, "nli_scoring": "first_token", **(review or {})}})
    syn = run_dir(P, "synthesis")
    (syn/"samples.jsonl").write_text(text if text is not None else "".join(json.dumps(r) + "\n" for r in recs))
    finish_stage(P, "synthesis")
    return P

def test_missing_upstream(tmp_path):
    P = load_params(None, {"run": {"name": "t", "results_dir": str(tmp_path)}})
    with pytest.raises(FileNotFoundError, match="synthesis"): run_review(P)

def test_bad_json_line_names_file_and_line(tmp_path):
    P = setup_run(tmp_path, [], text=json.dumps(rec(1)) + "\n{not json\n")
    with pytest.raises(ValueError, match=r"samples.jsonl:2: not valid JSON"): run_review(P)

def test_record_without_id(tmp_path):
    P = setup_run(tmp_path, [], text=json.dumps({"task": "qa"}) + "\n")
    with pytest.raises(ValueError, match=r"samples.jsonl:1: record has no 'id'"): run_review(P)

def test_duplicate_ids(tmp_path):
    P = setup_run(tmp_path, [rec(1), rec(1)])
    with pytest.raises(ValueError, match="duplicate ids"): run_review(P)

def test_bad_params_fail_fast(tmp_path):
    from omind.params_file import ParamsError
    with pytest.raises(ParamsError, match="contradiction_p"):
        load_params(None, {"review": {"contradiction_p": 2}})
    with pytest.raises(ParamsError, match="did you mean"):
        load_params(None, {"review": {"max_regeneration": 2}})

def test_invalid_and_malformed_records_are_counted(tmp_path):
    recs = [rec(1), rec(2, status="invalid", error="unparsable answer"), rec(3, messages=[{"role": "user", "content": "q"}]),
            rec(4, task="mcqa"), rec(5, answer="As an AI language model, I cannot give medical information.")]
    P = setup_run(tmp_path, recs)
    s = run_review(P)
    rv = {r["id"]: r for r in read_jsonl(run_dir(P, "review")/"reviewed.jsonl")}
    assert [rv[f"s{i}"]["drop_reason"] for i in range(1, 6)] == ["", "invalid", "invalid", "invalid", "refusal"]
    assert "unparsable answer" in rv["s2"]["review"]["actions"][0]["reason"]
    audit = read_jsonl(run_dir(P, "review")/"audit.jsonl")
    assert {"id", "task", "stage", "action", "reason", "scores"} <= set(audit[0])
    assert sum(a["action"] == "drop" for a in audit) == 4
    import pandas as pd
    f = pd.read_csv(run_dir(P, "review")/"funnel.csv").set_index("task")
    assert f.loc["qa", ["seeded", "generated", "after_review", "kept"]].tolist() == [4, 2, 2, 1]
    assert f.loc["all", "drop_invalid"] == 3 and s["n_kept"] == 1

def test_kill_and_resume_no_duplicates(tmp_path):
    recs = [rec(i) for i in range(10)]
    P = setup_run(tmp_path, recs)
    run_review(P)
    f = run_dir(P, "review")/"reviewed.jsonl"
    full = read_jsonl(f)
    lines = f.read_text().splitlines(keepends=True)
    f.write_text("".join(lines[:4]) + lines[4][:40])            # a kill in the middle of the second chunk's write
    (run_dir(P, "review")/"done.json").unlink()
    run_review(P)
    again = read_jsonl(f)
    assert [r["id"] for r in again] == [r["id"] for r in full]
    assert [r["kept"] for r in again] == [r["kept"] for r in full]
    assert (run_dir(P, "review")/"done.json").exists()

def test_hf_nli_model_path(tmp_path):
    recs = [rec(i) for i in range(3)]
    P = setup_run(tmp_path, recs, review={"nli_model": str(tiny_nli_model_dir())})
    s = run_review(P)
    assert s["n_samples"] == 3 and s["nli"] == str(tiny_nli_model_dir())
    rv = read_jsonl(run_dir(P, "review")/"reviewed.jsonl")
    judged = [x for r in rv for x in r["review"]["sentences"] if x["nli"]]
    assert judged and all(abs(sum(x["nli"].values()) - 1) < 1e-3 for x in judged)
    vt = (run_dir(P, "review")/"nli_verdicts.csv").read_text()
    assert vt.startswith("task,entailment,neutral,contradiction")

def test_regeneration_calls_teacher_once_per_attempt(tmp_path):
    "With the tiny model as judge nothing is contradicted at p > 0.8; force it with p > 0 to exercise regeneration end to end."
    recs = [rec(i, answer="Depression lowers mood a lot. It lasts two weeks or more. It changes sleep for many. It is common in adults.") for i in range(2)]
    P = setup_run(tmp_path, recs, review={"contradiction_p": 0.0, "max_contradicted": 2, "max_regenerations": 1,
                                           "regen_max_new_tokens": 8, "drop_unresolved": True})
    s = run_review(P)
    rv = read_jsonl(run_dir(P, "review")/"reviewed.jsonl")
    assert all(r["review"]["regenerations"] == 1 for r in rv)
    assert all(r["draft_messages"] == x["messages"] for r, x in zip(rv, recs))
    assert any(a["action"] == "regenerate" for r in rv for a in r["review"]["actions"])

def test_human_review_round_trip(tmp_path):
    recs = [rec(i) for i in range(4)]
    P = setup_run(tmp_path, recs)
    run_review(P)
    rv = read_jsonl(run_dir(P, "review")/"reviewed.jsonl")
    sheet = export_review_sheet(rv, tmp_path/"sheet.csv")
    rows = list(csv.DictReader(open(sheet)))
    assert list(rows[0]) == SHEET_COLUMNS and all(r["decision"] == "" for r in rows)
    rows[0].update(decision="reject"); rows[1].update(decision="edit", edit="Depression is a common mood disorder that lowers mood.")
    rows[2].update(decision="ACCEPT")
    with open(sheet, "w", newline="") as f:
        w = csv.DictWriter(f, SHEET_COLUMNS); w.writeheader(); w.writerows(rows)
    counts = apply_review_sheet(P, sheet)
    assert counts == {"reject": 1, "edit": 1, "accept": 1}
    new = {r["id"]: r for r in read_jsonl(run_dir(P, "review")/"reviewed.jsonl")}
    assert new["s0"]["kept"] is False and new["s0"]["drop_reason"] == "human_reject"
    assert final_answer(new["s1"]) == "Depression is a common mood disorder that lowers mood." and new["s1"]["kept"]
    assert new["s1"]["review"]["sentences"][0]["nli"] is not None          # the edit was re-judged
    audit = read_jsonl(run_dir(P, "review")/"audit.jsonl")
    assert sum(a["stage"] == "human" for a in audit) == 3

def test_human_review_bad_sheet(tmp_path):
    rv = review_records([rec(1), rec(2)], lambda pairs, progress=False: [{"entailment": 1, "neutral": 0, "contradiction": 0}]*len(pairs), ReviewParams())
    p = export_review_sheet(rv, tmp_path/"s.csv")
    rows = list(csv.DictReader(open(p)))
    rows[0].update(decision="approve"); rows[1].update(decision="", edit="new text")
    rows.append(dict(rows[0], id="s9", decision="accept"))
    with open(p, "w", newline="") as f:
        w = csv.DictWriter(f, SHEET_COLUMNS); w.writeheader(); w.writerows(rows)
    with pytest.raises(ReviewSheetError) as e: import_review_sheet(p, ["s1", "s2"])
    msg = str(e.value)
    assert "3 bad row(s)" in msg and "row 2: id 's1': decision 'approve'" in msg
    assert "row 3: id 's2' has an edit but no decision" in msg and "row 4: unknown id 's9'" in msg
    with pytest.raises(ReviewSheetError, match="not found"): import_review_sheet(tmp_path/"nope.csv", ["s1"])

def test_unknown_task_family_is_reported(tmp_path, capsys):
    "A record of a family the registry does not know is dropped as `unknown_task`, counted in the funnel and named in the summary."
    P = setup_run(tmp_path, [rec(1), rec(2, task="poem")])
    s = run_review(P)
    assert s["unknown_tasks"] == {"poem": 1} and s["drop_reasons"] == {"unknown_task": 1}
    assert "task families the registry does not know" in capsys.readouterr().out
    import pandas as pd
    f = pd.read_csv(run_dir(P, "review")/"funnel.csv").set_index("task")
    assert f.loc["poem", ["generated", "after_review", "kept", "drop_unknown_task"]].tolist() == [0, 0, 0, 1]
    assert list(f.index) == ["qa", "poem", "all"]
    with pytest.raises(ValueError, match=r"review.label_leakage_tasks.0: task family 'qa' has no leakage rule"):
        run_review(setup_run(tmp_path/"b", [rec(1)], review={"label_leakage_tasks": ["qa"]}))
