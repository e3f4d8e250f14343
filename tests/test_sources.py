"Source datasets in their published layouts (fixtures under tests/fixtures/sources/) and bad input files."
import json
from pathlib import Path

import pytest

from omind.readers import InputError, read_records
from omind.sources import SourceSpec, load_source, CAMS_LABELS

F = Path(__file__).resolve().parent/"fixtures"/"sources"


def load(name, layout, **kw):
    return load_source(SourceSpec(path=str(F/name), layout=layout, **kw), verbose=False)


def test_medmcqa_both_cop_bases_give_the_same_gold_answers():
    hf, orig = load("medmcqa_hf.jsonl", "medmcqa"), load("medmcqa_original.jsonl", "medmcqa")
    assert [(i["question"], i["answer"], i["label"]) for i in hf] == [(i["question"], i["answer"], i["label"]) for i in orig]
    ocd = next(i for i in orig if "obsessive" in i["question"])
    assert ocd["options"][ocd["answer"]] == "Exposure and response prevention" and ocd["label"] == "B"
    assert hf[0]["explanation"].startswith("SSRIs")


def test_medmcqa_base_must_be_given_when_the_data_cannot_decide(tmp_path):
    with pytest.raises(InputError, match=r"field 'synthesis\.sources\.mcqa\.0\.answer_index_base'.*set synthesis\.sources\.mcqa\.0\.answer_index_base"):
        load_source(SourceSpec(path=str(F/"medmcqa_ambiguous.jsonl"), layout="medmcqa"), where="synthesis.sources.mcqa.0.", verbose=False)
    zero = load("medmcqa_ambiguous.jsonl", "medmcqa", answer_index_base=0)
    one = load("medmcqa_ambiguous.jsonl", "medmcqa", answer_index_base=1)
    assert [i["answer"] for i in zero] == [1, 2, 3] and [i["answer"] for i in one] == [0, 1, 2]
    rows = [json.loads(l) for l in (F/"medmcqa_hf.jsonl").read_text().splitlines()]
    rows[1]["cop"] = 4                                            # a 0 (row 0) and a 4: no numbering fits every row
    (tmp_path/"mixed.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(InputError, match=r"mixed.jsonl:2: field 'answer'"):
        load_source(SourceSpec(path=str(tmp_path/"mixed.jsonl"), layout="medmcqa"), verbose=False)
    with pytest.raises(InputError, match=r"medmcqa_hf.jsonl:1: field 'answer': answer 0 is out of range"):
        load("medmcqa_hf.jsonl", "medmcqa", answer_index_base=1)


def test_mmlu_csv_without_header():
    items = load("mmlu_professional_psychology_test.csv", "mmlu")
    assert len(items) == 4 and [i["label"] for i in items] == ["A", "B", "B", "C"]
    assert items[1]["options"][items[1]["answer"]] == "Rorschach inkblot test"
    assert items[0]["source"]["line"] == 1                      # no header row: the first line is an item


def test_dreaddit_sad_cams_labels_are_names():
    d = load("dreaddit_test.csv", "dreaddit")
    assert [i["label"] for i in d] == ["stressed", "not stressed", "stressed", "not stressed"]
    assert d[0]["labels"] == ["not stressed", "stressed"] and d[0]["label_raw"] == "1"
    assert d[0]["text"].startswith("I can't stop worrying about rent")
    assert [i["label"] for i in load("dreaddit_test.csv", "dreaddit", label_names={"0": "calm", "1": "stress"})][:2] == ["stress", "calm"]
    c = load("cams_train.csv", "cams")
    assert [i["label"] for i in c] == ["Jobs and careers", "Relationship", "Alienation", "No reason", "Medication"]
    assert c[0]["labels"] == CAMS_LABELS
    s = load("sad_test.csv", "sad")
    assert s[0]["text"] == "My boss yelled at me in front of everyone" and s[0]["label"] == "Work"


def test_numeric_labels_without_names_are_an_error_naming_the_key():
    with pytest.raises(InputError, match=r"dreaddit_test.csv:2: field 'label'.*set evaluate\.public_sets\.1\.label_names"):
        load_source(SourceSpec(path=str(F/"dreaddit_test.csv"), layout="text_label"), where="evaluate.public_sets.1.", verbose=False)
    items = load("dreaddit_test.csv", "text_label", label_names=["no stress", "stress"])
    assert items[0]["label"] == "stress"
    with pytest.raises(InputError, match=r"cams_train.csv:2: field 'label': label '2' has no name"):
        load("cams_train.csv", "cams", label_names=["a", "b"])


def test_imhi_mentalchat_esconv_messages():
    im = load("imhi_dreaddit_test.csv", "imhi")
    assert im[0]["post"] == "I can't stop worrying about rent and my landlord keeps calling."
    assert im[0]["task_question"] == "Does the poster suffer from stress?"
    assert im[0]["label"] == "Yes, the poster suffers from stress" and im[0]["explanation"].startswith("The poster describes")
    assert im[2]["label"] == "This post shows the cause of mental disorder: Alienation"
    mc = load("mentalchat16k_train.jsonl", "mentalchat16k")
    assert mc[0]["question"].startswith("I've been feeling anxious") and mc[0]["answer"].startswith("It sounds like")
    assert mc[0]["instruction"].startswith("You are a helpful")
    assert mc[2]["question"] == "How do I support a friend who says they feel hopeless?"      # empty input: the instruction is the question
    es = load("esconv.json", "esconv")
    assert (es[0]["situation"], es[0]["emotion"], es[0]["problem"]) == (
        "I lost my job because of the pandemic and I worry about paying rent.", "anxiety", "job crisis")
    assert [t["role"] for t in es[0]["turns"]] == ["assistant", "user", "assistant", "user"]
    assert es[0]["turns"][1]["content"] == "Not great. I lost my job last week and I can't stop worrying."
    assert es[0]["turns"][2]["strategies"] == ["Reflection of feelings", "Question"]
    ms = load("messages.jsonl", "messages")
    assert [t["role"] for t in ms[0]["turns"]] == ["system", "user", "assistant"]


def test_every_item_names_its_source():
    for name, layout in [("medmcqa_hf.jsonl", "medmcqa"), ("dreaddit_test.csv", "dreaddit"), ("esconv.json", "esconv")]:
        items = load(name, layout, split="test")
        for k, it in enumerate(items):
            assert it["source"] == {"dataset": f"tests/fixtures/sources/{name}", "config": None, "split": "test", "row": k,   # repository-relative
                                    "line": it["source"]["line"], "layout": layout}
            assert it["id"] == f"{Path(name).stem}:test:{k}"
    assert [i["source"]["line"] for i in load("dreaddit_test.csv", "dreaddit")] == [2, 3, 4, 5]


def test_hub_layout_folder_through_load_dataset():
    local = load("medmcqa_hf.jsonl", "medmcqa")
    hub = load_source(SourceSpec(hub=str(F/"hub_medmcqa"), layout="medmcqa", name="medmcqa"), verbose=False)
    val = load_source(SourceSpec(hub=str(F/"hub_medmcqa"), layout="medmcqa", split="validation"), verbose=False)
    strip = lambda its: [(i["question"], i["options"], i["answer"]) for i in its]
    assert strip(hub) == strip(local[:3]) and strip(val) == strip(local[3:])
    assert hub[2]["source"]["row"] == 2 and hub[2]["source"]["split"] == "train" and hub[2]["id"] == "medmcqa:train:2"
    with pytest.raises(InputError, match="field 'hub'"):
        load_source(SourceSpec(hub=str(F/"no_such_folder"), layout="medmcqa"), verbose=False)


def test_counts_sampling_and_shortfall(capsys):
    a = load_source(SourceSpec(path=str(F/"medmcqa_hf.jsonl"), layout="medmcqa", n=3, seed=1))
    out = capsys.readouterr().out
    assert "requested 3, available 5" in out and "sampled 3 of 5 rows (seed 1" in out
    b = load("medmcqa_hf.jsonl", "medmcqa", n=3, seed=1)
    assert [i["id"] for i in a] == [i["id"] for i in b]                      # reproducible
    rows = [i["source"]["row"] for i in a]
    assert rows == sorted(rows) and len(set(rows)) == 3
    with pytest.raises(InputError, match=r"field 'synthesis\.sources\.mcqa\.0\.n': asked for 9 items but the source has 5"):
        load_source(SourceSpec(path=str(F/"medmcqa_hf.jsonl"), layout="medmcqa", n=9), where="synthesis.sources.mcqa.0.")
    assert len(load_source(SourceSpec(path=str(F/"medmcqa_hf.jsonl"), layout="medmcqa", n=9, allow_shortfall=True))) == 5
    assert "shortfall: using all 5" in capsys.readouterr().out


@pytest.mark.parametrize("name,layout,expect", [
    ("dreaddit_latin1.csv", "dreaddit", r"dreaddit_latin1.csv:3: field 'text': byte 0xe9 at column 7 is not valid utf-8.*encoding: latin-1"),
    ("broken.jsonl", "medmcqa", r"broken.jsonl:4: field '<json>': not valid JSON"),
    ("short_row.csv", "dreaddit", r"short_row.csv:3: field 'label': missing"),
    ("empty.csv", "dreaddit", r"empty.csv: no records.*allow_empty"),
    ("header_only.csv", "dreaddit", r"header_only.csv: no records"),
    ("empty.jsonl", "messages", r"empty.jsonl: no records"),
    ("no_such_file.csv", "dreaddit", r"no_such_file.csv: file not found"),
])
def test_bad_files_name_the_place(name, layout, expect):
    with pytest.raises(InputError, match=expect):
        load(name, layout)


def test_latin1_and_empty_when_allowed():
    items = load("dreaddit_latin1.csv", "dreaddit", encoding="latin-1")
    assert items[1]["text"] == "My caf\u00e9 shift starts at 5 and I dread it" and items[1]["label"] == "stressed"
    assert load("empty.csv", "dreaddit", allow_empty=True) == []
    assert read_records(F/"header_only.csv", allow_empty=True) == []
    with pytest.raises(InputError, match="only its header"):
        read_records(F/"header_only.csv")


def test_column_mapping_and_bad_rows(tmp_path):
    (tmp_path/"posts.csv").write_text("post_body,stress\nI feel fine,0\nI am overwhelmed,1\n")
    items = load_source(SourceSpec(path=str(tmp_path/"posts.csv"), layout="dreaddit", columns={"text": "post_body", "label": "stress"}), verbose=False)
    assert [i["label"] for i in items] == ["not stressed", "stressed"]
    with pytest.raises(InputError, match=r"posts.csv:2: field 'text': missing or empty.*columns\.text"):
        load_source(SourceSpec(path=str(tmp_path/"posts.csv"), layout="dreaddit"), verbose=False)
    with pytest.raises(InputError, match=r"posts.csv:2: field 'x\.columns\.label': column 'lab' not found"):
        load_source(SourceSpec(path=str(tmp_path/"posts.csv"), layout="dreaddit", columns={"text": "post_body", "label": "lab"}), where="x.", verbose=False)
    (tmp_path/"m.jsonl").write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "robot", "content": "x"}]}) + "\n")
    with pytest.raises(InputError, match=r"m.jsonl:1: field 'messages\.1\.speaker': unknown speaker 'robot'"):
        load_source(SourceSpec(path=str(tmp_path/"m.jsonl"), layout="messages"), verbose=False)
    (tmp_path/"q.csv").write_text("question,A,B,C,D,answer\nWhat?,a,b,c,d,F\n")
    with pytest.raises(InputError, match=r"q.csv:2: field 'answer': 'F' is neither a letter A-D"):
        load_source(SourceSpec(path=str(tmp_path/"q.csv"), layout="mcqa"), verbose=False)


# --- the same published sources given as Hub ids: folders laid out like Hub repositories, read by datasets.load_dataset

def _readme(path, configs):
    "A Hub dataset card whose YAML header names the configs and their data files (as the Hub's own repos do)."
    import yaml
    path.write_text("---\n" + yaml.safe_dump({"configs": configs}, sort_keys=False) + "---\n# test copy\n")


def _hub_repos(root):
    """Hub-style copies of the local fixtures: MedMCQA (openlifescienceai/medmcqa: Parquet under data/, cop 0-3), MMLU
    (cais/mmlu: one config per subject, question / subject / choices / answer 0-3), Dreaddit (andreagasparini/dreaddit:
    Parquet under data/), MentalChat16K (instruction / input / output) and ESConv (thu-coai/esconv: train.txt, one JSON
    dialog per line, chosen with data_files)."""
    import csv, pandas as pd
    med = [json.loads(l) for l in (F/"medmcqa_original.jsonl").read_text().splitlines() if l.strip()]
    (root/"medmcqa"/"data").mkdir(parents=True)
    pd.DataFrame([{**r, "cop": r["cop"] - 1} for r in med]).to_parquet(root/"medmcqa"/"data"/"train-00000-of-00001.parquet")
    _readme(root/"medmcqa"/"README.md", [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}])
    rows = list(csv.reader((F/"mmlu_professional_psychology_test.csv").open()))
    mm = [{"question": q, "subject": "professional_psychology", "choices": [a, b, c, d], "answer": "ABCD".index(ans)} for q, a, b, c, d, ans in rows]
    for sub, part in (("professional_psychology", mm), ("high_school_psychology", mm[:2])):
        (root/"mmlu"/sub).mkdir(parents=True)
        pd.DataFrame([{**r, "subject": sub} for r in part]).to_parquet(root/"mmlu"/sub/"test-00000-of-00001.parquet")
    _readme(root/"mmlu"/"README.md", [{"config_name": s, "data_files": [{"split": "test", "path": f"{s}/test-*"}]}
                                     for s in ("high_school_psychology", "professional_psychology")])
    (root/"dreaddit"/"data").mkdir(parents=True)
    pd.read_csv(F/"dreaddit_test.csv").to_parquet(root/"dreaddit"/"data"/"test-00000-of-00001.parquet")
    _readme(root/"dreaddit"/"README.md", [{"config_name": "default", "data_files": [{"split": "test", "path": "data/test-*"}]}])
    (root/"mentalchat16k").mkdir()
    (root/"mentalchat16k"/"train.jsonl").write_text((F/"mentalchat16k_train.jsonl").read_text())
    _readme(root/"mentalchat16k"/"README.md", [{"config_name": "default", "data_files": [{"split": "train", "path": "train.jsonl"}]}])
    (root/"esconv").mkdir()
    (root/"esconv"/"train.txt").write_text("".join(json.dumps(d) + "\n" for d in json.loads((F/"esconv.json").read_text())))
    (root/"esconv"/"README.md").write_text("---\nlicense: cc-by-nc-4.0\n---\n# ESConv test copy\n")
    return root


LOCAL_AND_HUB = [  # (local file, its layout and split, the Hub-style spec, the fields an item must keep)
    ("medmcqa_original.jsonl", "medmcqa", "train", {"hub": "medmcqa"}, ("question", "options", "answer", "label", "explanation")),
    ("mmlu_professional_psychology_test.csv", "mmlu", "test", {"hub": "mmlu", "config": "professional_psychology"}, ("question", "options", "answer", "label")),
    ("dreaddit_test.csv", "dreaddit", "test", {"hub": "dreaddit"}, ("text", "label", "labels")),
    ("mentalchat16k_train.jsonl", "mentalchat16k", "train", {"hub": "mentalchat16k"}, ("question", "answer", "instruction")),
    ("esconv.json", "esconv", "train", {"hub": "esconv", "data_files": {"train": "train.txt"}}, ("turns", "situation", "emotion", "problem")),
]


@pytest.fixture
def no_network(monkeypatch):
    "The network is the one thing mocked: any socket connection fails; datasets.load_dataset is spied on, not replaced."
    import socket, datasets
    def refuse(self, *a, **k): raise OSError("network disabled in this test")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    calls, real = [], datasets.load_dataset
    def spy(*a, **k):
        calls.append((a, k)); return real(*a, **k)
    monkeypatch.setattr(datasets, "load_dataset", spy)
    return calls


def test_published_sources_as_hub_ids_through_load_dataset(tmp_path, no_network):
    "Each published source read as a Hub id (a Hub-style folder) gives the items its local copy gives, via datasets.load_dataset."
    root = _hub_repos(tmp_path)
    for name, layout, split, hub, keep in LOCAL_AND_HUB:
        local = load(name, layout, split=split)
        spec = {**hub, "hub": str(root/hub["hub"])}
        n_calls = len(no_network)
        items = load_source(SourceSpec(layout=layout, split=split, name=hub["hub"], **spec), verbose=False)
        assert len(no_network) == n_calls + 1, f"{name}: not read through datasets.load_dataset"
        args, kw = no_network[-1]
        assert args[:2] == (spec["hub"], hub.get("config")) and kw["split"] == split
        assert [{k: i.get(k) for k in keep} for i in items] == [{k: i.get(k) for k in keep} for i in local], name
        for k, it in enumerate(items):
            assert it["source"] == {"dataset": spec["hub"], "config": hub.get("config"), "split": split, "row": k, "line": None, "layout": layout}
            assert it["id"] == f"{hub['hub']}:{split}:{k}"
    hs = load_source(SourceSpec(hub=str(root/"mmlu"), config="high_school_psychology", split="test", layout="mmlu"), verbose=False)
    assert len(hs) == 2 and hs[0]["source"]["config"] == "high_school_psychology"          # the config picks the subject
    with pytest.raises(InputError, match=r"field 'hub': datasets.load_dataset failed"):
        load_source(SourceSpec(hub=str(root/"mmlu"), config="no_such_subject", split="test", layout="mmlu"), verbose=False)


def test_hub_sources_seed_families_like_local_copies(tmp_path, no_network):
    "synthesis.sources given as Hub ids seed every family with the same gold answers as the local copies, and name their rows."
    from omind.synthesis import SynthesisParams, make_seeds
    from omind.testing import toy_knowledge
    root, kb = _hub_repos(tmp_path), toy_knowledge()
    fam = {"medmcqa": "mcqa", "mmlu": "mcqa", "dreaddit": "classification", "mentalchat16k": "qa", "esconv": "conversation"}
    none = {t: 0 for t in ("mcqa", "classification", "root_cause", "qa", "conversation")}
    local, hub = {}, {}
    for name, layout, split, h, _ in LOCAL_AND_HUB:
        local.setdefault(fam[h["hub"]], []).append({"path": str(F/name), "layout": layout, "split": split})
        hub.setdefault(fam[h["hub"]], []).append({**h, "hub": str(root/h["hub"]), "layout": layout, "split": split})
    a, _ = make_seeds(kb, SynthesisParams(n=none, sources=local), 0, verbose=False)
    b, rep = make_seeds(kb, SynthesisParams(n=none, sources=hub), 0, verbose=False)
    gold = {"mcqa": ("question", "options", "answer", "answer_text", "reference"), "classification": ("post", "label", "candidates"),
            "qa": ("question", "reference"), "conversation": ("opening", "situation", "emotion", "problem")}
    for t, ks in gold.items():
        assert len(b[t]) == len(a[t]) > 0, t
        assert [[s.get(k) for k in ks] for s in b[t]] == [[s.get(k) for k in ks] for s in a[t]], t
        assert all(s["source"]["dataset"].startswith(str(root)) and s["source"]["row"] is not None for s in b[t])
    assert [x["seeded"] for x in rep["mcqa"]["sources"]] == [5, 4]
