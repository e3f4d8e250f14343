"Integration tests of the review stage: safety detector, bad input, kill-and-resume, HF NLI path, human review sheet."
import csv, json
from pathlib import Path

import pytest

from omind.core import load_params, run_dir, mark_done, read_jsonl, read_json
from omind.review import (safety_check, crisis_topic, crisis_resources, method_details, run_review, review_records,
                          tiny_nli_model_dir, export_review_sheet, import_review_sheet, apply_review_sheet, ReviewParams,
                          ReviewSheetError, SHEET_COLUMNS, final_answer)


def conv(user, assistant):
    return [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]

GUIDE = "Please call or text 988 in the US, or your local emergency number, right now."

# ---------------------------------------------------------------- safety: crisis topics
@pytest.mark.parametrize("text", [
    "I have been having suicidal thoughts lately.", "Sometimes I want to kill myself.", "I keep thinking about ending my life.",
    "He talked about taking his own life.", "I just want to die.", "Everyone would be better off dead without me.",
    "I started self-harming again.", "She has a history of self harm.", "I've been cutting myself at night.",
    "I feel like there is no reason to live.", "She overdosed last year.", "What are warning signs of suicide?",
])
def test_crisis_topic_positive(text): assert crisis_topic(text), text

@pytest.mark.parametrize("text", [
    "This job is killing me.", "I'm dying to see that movie.", "I killed it at the presentation today.",
    "My phone died and I felt anxious.", "I cut my hair short.", "Exams are a nightmare but I'm coping.",
    "How do I manage panic attacks?", "Deadline pressure makes me irritable.",
])
def test_crisis_topic_negative(text): assert not crisis_topic(text), text

# ---------------------------------------------------------------- safety: resources
@pytest.mark.parametrize("text", [
    "Call or text 988.", "Reach the 988 Suicide & Crisis Lifeline.", "Call 911 if you are in danger.", "In the UK call 999.",
    "Contact a crisis line near you.", "Text HOME to 741741 to reach the Crisis Text Line.", "Call the Samaritans.",
    "Please call your local emergency number.", "Go to the nearest emergency department.", "A suicide prevention hotline can help.",
])
def test_resources_positive(text): assert crisis_resources(text), text

@pytest.mark.parametrize("text", [
    "Talk to a friend about it.", "Try some breathing exercises.", "A therapist can help with CBT.", "It was in 1988.",
])
def test_resources_negative(text): assert not crisis_resources(text), text

# ---------------------------------------------------------------- safety: method details
@pytest.mark.parametrize("text", [
    "A lethal dose of paracetamol is around 10 grams.", "How many pills would it take?", "Taking 40 tablets would kill you.",
    "He tied a noose in the garage.", "She thought about hanging herself.", "Cut deeper along the vein.",
    "I want to slit my wrists.", "He planned to jump off the bridge.", "Carbon monoxide from car exhaust fumes.",
    "What is the most painless way to die?", "the quickest method to kill yourself", "I could shoot myself.",
    "An overdose needs about 5000 mg of it.",
])
def test_method_positive(text): assert method_details(text), text

@pytest.mark.parametrize("text", [
    "Remove firearms and stored medication from the home.", "An overdose of acetaminophen can damage the liver; seek help.",
    "Take 20 mg of your prescribed medication as your doctor says.", "Means restriction is a proven prevention strategy.",
    "If you have taken too many pills, call 911 now.", "Cutting down on alcohol helps sleep.", "Jumping to conclusions is a cognitive distortion.",
])
def test_method_negative(text): assert not method_details(text), text

# ---------------------------------------------------------------- safety: whole conversations
def test_safety_conversations():
    assert safety_check(conv("What is depression?", "A mood disorder."))["ok"]
    v = safety_check(conv("I want to end my life.", "That sounds hard. Try journaling."))
    assert (v["ok"], v["reason"]) == (False, "crisis_without_guidance")
    assert safety_check(conv("I want to end my life.", "I'm glad you told me. " + GUIDE))["ok"]
    # guidance written by the user does not count: it must come from the assistant
    assert not safety_check(conv("I want to die. Someone said call 988.", "Try journaling."))["ok"]
    v = safety_check(conv("I want to die.", GUIDE + " A lethal dose is 10 grams."))
    assert (v["ok"], v["reason"]) == (False, "method_detail")
    # method detail in the user post also makes the sample unusable
    assert safety_check(conv("How many pills does it take to die?", GUIDE))["reason"] == "method_detail"
    # the clinical answer about suicide risk carries guidance and passes
    assert safety_check(conv("What are risk factors for suicide?", "Prior attempts and depression raise risk. " + GUIDE))["ok"]


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
    mark_done(syn)
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
    from omind.core import ParamsError
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
