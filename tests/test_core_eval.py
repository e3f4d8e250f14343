"""Held-out core evaluation: knowledge-base items built in code and disjoint from a written dataset, scoring by
log-likelihood on the tiny random model (real SmolLM2 tokenizer), letter-prior calibration against a fake scorer
with a constant "A" bias, and the paired tables."""
import json, math, random
from collections import Counter

import pytest
import yaml

from omind.core import load_params, run_dir, stable_hash
from omind.core_eval import (HELDOUT_SOURCE, PRED_COLUMNS, CORE_TABLE_COLUMNS, PAIRED_COLUMNS, training_rows, training_keys,
                             heldout_items, label_distribution, score_items, prediction_rows, calibrate_letters,
                             core_baselines, core_table, paired_table)
from omind.kb_build import data_dir
from omind.tasks import mcqa_seeds, classification_seeds, conversation_seeds, tail_name, NO_DISORDER
from omind.testing import toy_knowledge, FakeScorer
from omind.text import LETTERS, normalize


@pytest.fixture(scope="module")
def kb():
    "The curated conditions shipped with the package (no ICD-10-CM chapter), read by the knowledge stage's loader."
    ids = tuple(c["id"] for c in yaml.safe_load((data_dir()/"conditions.yaml").read_text())["conditions"])
    return toy_knowledge(ids)


def _rows(seeds):
    "Dataset rows the way the dataset stage writes them: the seed inside the provenance JSON."
    out = []
    for s in seeds:
        if s["task"] == "mcqa":
            user = s["question"] + "\n\n" + "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(s["options"])) + "\n\nAnswer with the letter."
            label, opts, reply = s["answer"], s["options"], f"{s['answer']}. {s['answer_text']}"
        elif s["task"] == "classification":
            user, label, opts, reply = f'Post: "I am {s["persona"]}."\n\nChoose one of: {", ".join(s["candidates"])}.', s["label"], [], f"Label: {s['label']}"
        else:
            user, label, opts, reply = f"I am {s['persona']} and I feel bad.", "", [], "That sounds hard."
        msgs = [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
        out.append({"id": f"{s['task']}-{stable_hash(s, 8)}", "task": s["task"], "messages": msgs, "label": label, "options": list(opts),
                    "draft_messages": msgs, "evidence": [], "provenance": json.dumps({"seed": s})})
    return out


def test_heldout_items_disjoint_from_the_written_dataset(kb, tmp_path):
    from omind.dataset import save_splits
    from omind.stages import mark_done
    seeds = mcqa_seeds(kb, 120, seed=0) + classification_seeds(kb, 80, seed=0) + conversation_seeds(kb, 30, seed=0)
    rows = _rows(seeds)
    P = load_params(None, {"run": {"results_dir": str(tmp_path), "name": "r"}})
    d = run_dir(P, "dataset")
    save_splits({"train": rows[:200], "test": rows[200:]}, d/"hf"); mark_done(d)
    back = training_rows(P)
    assert len(back) == len(rows)                                        # every split is read
    keys = training_keys(back, kb)
    prof = [s for s in seeds if s.get("kind") == "profile"][0]
    assert (normalize(prof["answer_text"]), frozenset(normalize(tail_name(kb, kb.get_triple(a))) for a in prof["anchors"])) in keys["profiles"]

    M = heldout_items(kb, "mcqa", 400, seed=7, exclude=back)
    assert len(M) == 400 and label_distribution(M) == {"A": 100, "B": 100, "C": 100, "D": 100}
    assert len({normalize(m["question"]) for m in M}) == 400 and all(m["source"] == HELDOUT_SOURCE for m in M)
    for m in M:
        assert (normalize(m["condition"]), frozenset(map(normalize, m["symptoms"]))) not in keys["profiles"]
        assert normalize(m["question"]) not in keys["questions"]
        assert m["options"][LETTERS.index(m["gold_letter"])] == m["label"] and len(set(m["options"])) == 4
        assert m["question"] in m["messages"][-1]["content"]
    C = heldout_items(kb, "classification", 200, seed=7, exclude=back)
    dist = label_distribution(C)
    cap = label_distribution(heldout_items(kb, "classification", 5000, seed=7, exclude=back))   # every unused pair per label
    top = max(dist.values())
    assert len(C) == 200 and NO_DISORDER in dist
    assert all(dist.get(l, 0) >= min(c, top - 1) for l, c in cap.items()), (dist, cap)    # labels take turns until they run out
    for c in C:
        assert c["label"] in c["labels"] and c["messages"][-1]["content"].startswith("Post: ")
        if c["condition"]: assert (normalize(c["condition"]), frozenset(map(normalize, c["symptoms"]))) not in keys["profiles"]
    # a training item built from a held-out profile would be caught: add one and it disappears from the held-out set
    m0 = M[0]
    seed_like = {"task": "classification", "label": m0["condition"], "symptoms": list(reversed(m0["symptoms"])), "persona": "x", "candidates": []}
    M2 = heldout_items(kb, "mcqa", 400, seed=7, exclude=back + _rows([seed_like]))
    assert m0["question"] not in {m["question"] for m in M2}


def _items(n):
    lets = [LETTERS[i % 4] for i in range(n)]; random.Random(0).shuffle(lets)
    return [{"id": f"i{i}", "task": "mcqa", "source": "s", "question": f"q{i}", "options": [f"o{i}{j}" for j in range(4)],
             "label": f"o{i}{LETTERS.index(g)}", "gold_letter": g, "labels": [], "messages": [{"role": "user", "content": f"q{i}?"}]}
            for i, g in enumerate(lets)]


def _acc(rows, method):
    r = [x for x in rows if x["method"] == method]; return sum(x["correct"] for x in r) / len(r)


def test_calibration_removes_a_constant_letter_bias():
    items = _items(1000); gold = {it["messages"][0]["content"]: it["gold_letter"] for it in items}
    scorer = FakeScorer(gold, 0.0, {"A": 8.0})
    flat = prediction_rows("flat", score_items(scorer, items, option_text=False))
    assert scorer.calls["choices"] == 0                                                   # letters are single tokens: no score_choices
    raw = [r for r in flat if r["method"] == "letter_raw"]
    assert {r["pred"] for r in raw} == {"A"} and _acc(flat, "letter_raw") == 0.25       # always-A before
    t = core_table(flat, rounds=200).set_index("method")
    assert math.isclose(t.loc["letter_raw", "macro_f1"], 0.1)
    cal = Counter(r["pred"] for r in flat if r["method"] == "letter_calibrated")
    assert all(0.2 < v / 1000 < 0.3 for v in cal.values()) and set(cal) == set("ABCD"), cal   # every letter, about a quarter each
    assert abs(_acc(flat, "letter_calibrated") - 0.25) < 0.045                                  # chance, not 0 or 25 % by accident
    assert t.loc["letter_calibrated", "accuracy_lo"] < 0.25 + 0.01 and 0.2 < t.loc["letter_calibrated", "macro_f1"] < 0.3

    biased = prediction_rows("tuned", score_items(FakeScorer(gold, 1.5, {"A": 8.0}, seed=1), items, option_text=False))
    clean = prediction_rows("clean", score_items(FakeScorer(gold, 1.5, {}, seed=1), items, option_text=False))
    assert _acc(biased, "letter_raw") < 0.3 < 0.5 < _acc(clean, "letter_raw")
    assert abs(_acc(biased, "letter_calibrated") - _acc(clean, "letter_raw")) < 0.02               # the accuracy comes back

    pt = paired_table(flat + biased, "flat", rounds=300)
    assert list(pt.columns) == PAIRED_COLUMNS
    row = pt[pt.method == "letter_calibrated"].iloc[0]
    assert row["n"] == 1000 and row["lo"] > 0 and row["p"] < 1e-6 and row["n01"] > row["n10"] and 0 < row["mde"] < 0.1


def test_scoring_on_the_tiny_model(kb):
    from omind.llm_local import TransformersLLM
    from omind.model_store import tiny_model_dir
    llm = TransformersLLM(str(tiny_model_dir()), batch_size=8)
    M = heldout_items(kb, "mcqa", 8, seed=3)
    C = heldout_items(kb, "classification", 6, seed=3)
    recs = score_items(llm, M + C, progress=False)
    assert [r["id"] for r in recs] == [it["id"] for it in M + C]
    direct = llm.score_next_token([m["messages"] for m in M], list("ABCD"))         # letters: one next-token pass per item
    for r, d in zip(recs[:8], direct):
        assert r["gold"] in "ABCD" and r["label_logprobs"] is None
        assert all(math.isclose(r["letter_logprobs"][l], d[l], abs_tol=1e-4) for l in "ABCD")
        assert set(r["option_logprobs"]) == set("ABCD") and all(math.isfinite(v) for v in r["option_logprobs"].values())
    one = llm.score_choices([[{"role": "user", "content": M[0]["question"]}]], M[0]["options"], normalize=True)[0]
    assert all(math.isclose(recs[0]["option_logprobs"][LETTERS[j]], one[o], abs_tol=1e-4) for j, o in enumerate(M[0]["options"]))
    for r, c in zip(recs[8:], C):
        assert r["letter_logprobs"] is None and set(r["label_logprobs"]) == set(c["labels"]) and r["gold"] == c["label"]
    rows = prediction_rows("tiny", recs)
    assert set(rows[0]) == set(PRED_COLUMNS)
    assert Counter(r["method"] for r in rows) == Counter({"letter_raw": 8, "letter_calibrated": 8, "option_text": 8, "label_ll": 6, "label_calibrated": 6})
    t = core_table(rows, rounds=100)
    assert list(t.columns) == CORE_TABLE_COLUMNS and set(t["n"]) == {8, 6} and (t["unparsable"] == 0).all()
    b = {(r["task"], r["baseline"]): r for r in core_baselines(M + C)}
    assert b[("mcqa", "chance")]["accuracy"] == 0.25 and b[("mcqa", "always_A")]["n"] == 8 and ("classification", "majority_label") in b
    assert calibrate_letters(recs[:8])[0]["letter_calibrated"].keys() == set("ABCD")
