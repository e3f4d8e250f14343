"Integration tests of the knowledge stage: loaders on real-format input, bad files, the retriever contract, params."
import json, shutil, time
from pathlib import Path

import pytest
import yaml

from omind.core import load_params
from omind.params_file import ParamsError
from omind.readers import InputError
from omind.kb import KnowledgeBase, KnowledgeError, Entity, Triple
from omind.kb_build import (KnowledgeParams, load_icd10, build_knowledge, load_curated, load_text_dir, load_umls,
                            load_triples_file, curated_files, load_knowledge)
from omind.knowledge import run_knowledge
from omind.retrieval import Retriever, get_retriever, eval_queries, embedder_path
from omind.testing import small_curated_file

ROOT = Path(__file__).resolve().parents[1]
UMLS = ROOT/"tests"/"fixtures"/"umls"


def test_default_knowledge_base_counts():
    P = load_params(None)
    kb = load_knowledge(P)
    c = kb.counts()
    print({k: c[k] for k in ("entities", "triples", "chunks", "facts", "facts_with_url_source")})
    assert c["entities_by_type"]["icd10"] >= 1123                    # every F code (plus the chapter)
    assert len(kb.by_type("condition")) >= 30 and len(kb.by_type("crisis")) == 2
    assert c["facts"] >= 600 and c["facts_with_url_source"] >= c["facts"] - 60
    assert all(t.source for t in kb.triples)
    # condition facts are linked to the ICD-10-CM codes loaded from simple-icd-10-cm
    assert kb.get_entity("icd10:F42").name == "Obsessive-compulsive disorder"
    assert "icd10:F42" in kb.facts_of("cond:obsessive_compulsive_disorder", "has_icd10_code")
    assert kb.parent("icd10:F42.2") == "icd10:F42"


def test_crisis_topics_carry_resources_and_no_method_detail():
    kb = KnowledgeBase()
    for f in curated_files(): load_curated(kb, f)
    for e in kb.by_type("crisis"):
        res = " ".join(kb.facts_of(e.id, "crisis_resource"))
        assert "988" in res and "emergency number" in res
        assert "988" in e.attrs["overview"]
    text = " ".join(t.text.lower() for t in kb.triples if t.head.startswith("crisis:"))
    for word in ("overdose on", "pills", "hanging", "razor", "cutting", "lethal dose", "how to kill"):
        assert word not in text, word


def test_every_curated_condition_is_complete():
    kb = KnowledgeBase()
    for f in curated_files(): load_curated(kb, f)
    for e in kb.by_type("condition"):
        for rel in ("has_symptom", "duration", "risk_factor", "first_line_treatment", "self_help", "seek_urgent_help", "has_icd10_code"):
            assert kb.facts_of(e.id, rel), (e.id, rel)
    assert not [t for t in kb.facts if "mg" in t.text.split()]        # no dosing


def test_text_dir_loader(tmp_path):
    d = tmp_path/"my_dsm_notes"; d.mkdir()
    (d/"mood.md").write_text("# Major depressive disorder\n" + " ".join(f"w{i}" for i in range(500)) + "\n# Bipolar I\nmania for one week\n")
    (d/"readme.txt").write_text("ICD-11 6B00 Generalised anxiety disorder")
    kb = KnowledgeBase()
    info = load_text_dir(kb, d, chunk_words=200, overlap=50)
    assert info == {"text_files": 2, "chunks": 5}
    assert kb.chunks[0].source == "my_dsm_notes/mood.md" and kb.chunks[0].title == "mood - Major depressive disorder"


def test_same_named_text_dirs_keep_every_chunk(tmp_path):
    # two folders called `notes` with a file of the same name: before, the second folder's chunks were dropped as "merged"
    for sub, text in (("dsm5", "Major depressive disorder needs five symptoms for two weeks."),
                      ("icd11", "Single episode depressive disorder is coded 6A70.")):
        (tmp_path/sub/"notes").mkdir(parents=True)
        (tmp_path/sub/"notes"/"mood.md").write_text(f"# Depression\n{text}\n")
    kb = build_knowledge(KnowledgeParams(icd10=False, curated=False, text_dirs=[str(tmp_path/"dsm5"/"notes"), str(tmp_path/"icd11"/"notes")]))
    assert len(kb.chunks) == 2 and "chunks_merged" not in kb.stats
    assert {c.text for c in kb.chunks} == {"Major depressive disorder needs five symptoms for two weeks.",
                                          "Single episode depressive disorder is coded 6A70."}
    assert [i["chunks"] for i in kb.load_info] == [1, 1]
    one = build_knowledge(KnowledgeParams(icd10=False, curated=False, text_dirs=[str(tmp_path/"dsm5"/"notes")]))
    assert one.chunks[0].id == "chunk:notes/mood.md:0"              # a single folder keeps its short name


def test_empty_and_undecodable_knowledge_inputs(tmp_path):
    kb = KnowledgeBase(); kb.add_entity(Entity("cond:x", "X", "condition"))
    for name, data in (("empty.csv", b""), ("header.csv", b"head,relation,tail\n"), ("empty.jsonl", b"\n\n")):
        (tmp_path/name).write_bytes(data)
        with pytest.raises(InputError, match=f"{name}: no records"):
            load_triples_file(kb, tmp_path/name)
    (tmp_path/"latin1.tsv").write_bytes("head\trelation\ttail\ncond:x\thas_symptom\tfatigue\ncond:x\thas_symptom\tna\xefve worry\n".encode("latin-1"))
    with pytest.raises(InputError, match=r"latin1.tsv:3: field 'tail': byte 0xef at column 22 is not valid utf-8"):
        load_triples_file(kb, tmp_path/"latin1.tsv")
    (tmp_path/"c.yaml").write_bytes("conditions:\n  - id: cond:a\n    name: Caf\xe9 syndrome\n".encode("latin-1"))
    with pytest.raises(InputError, match=r"c.yaml:3: field '<text>': byte 0xe9"):
        load_curated(KnowledgeBase(), tmp_path/"c.yaml")
    u = tmp_path/"umls"; shutil.copytree(UMLS, u)
    (u/"MRCONSO.RRF").write_bytes((u/"MRCONSO.RRF").read_bytes().replace("Trouble dépressif".encode(), "Trouble dépressif".encode("latin-1")))
    with pytest.raises(KnowledgeError, match=r"MRCONSO.RRF:\d+: field 'STR': byte 0xe9"):
        load_umls(KnowledgeBase(), u)
    (u/"MRREL.RRF").write_bytes(b""); shutil.copy(UMLS/"MRCONSO.RRF", u/"MRCONSO.RRF")
    with pytest.raises(KnowledgeError, match=r"MRREL.RRF: no rows"):
        load_umls(KnowledgeBase(), u)
    (tmp_path/"empty_dir").mkdir()
    with pytest.raises(KnowledgeError, match=r"empty_dir: field 'text_dirs': no .md or .txt files"):
        load_text_dir(KnowledgeBase(), tmp_path/"empty_dir")


def test_umls_loader_on_fixture():
    kb = KnowledgeBase()
    info = load_umls(kb, UMLS)
    assert info["umls_concepts"] == 5
    e = kb.get_entity("umls:C1269683")
    assert e.name == "Major depressive disorder" and "Depressive Disorder, Major" in e.aliases
    assert "Depressive Syndrome" not in kb.get_entity("umls:C0011581").aliases        # suppressed string
    assert "Trouble dépressif" not in kb.get_entity("umls:C0011581").aliases           # language filter
    rels = {(t.head, t.relation, t.tail) for t in kb.triples}
    assert ("umls:C0074393", "may_treat", "umls:C1269683") in rels
    assert ("umls:C0011581", "inverse_isa", "umls:C1269683") in rels
    assert not any(t.relation == "sy" for t in kb.triples) and info["umls_relations_skipped"] == 2
    kb2 = KnowledgeBase(); load_umls(kb2, UMLS, semantic_types=["Mental or Behavioral Dysfunction"])
    assert set(kb2.entities) == {"umls:C1269683", "umls:C0011581", "umls:C0030319"}


def test_triples_csv_and_jsonl(tmp_path):
    kb = KnowledgeBase(); kb.add_entity(Entity("cond:x", "Condition X", "condition"))
    (tmp_path/"a.csv").write_text("head,relation,tail,source,text,tail_name,tail_type\n"
                                  "cond:x,first_line_treatment,drug:ssri,https://a.org,,SSRIs,drug_class\n"
                                  "cond:x,has_symptom,low mood,https://a.org,Low mood is typical of X.,,\n"
                                  "cond:x,has_symptom,low mood,https://b.org,,,\n")
    (tmp_path/"b.jsonl").write_text(json.dumps({"head": "drug:ssri", "relation": "is_a", "tail": "antidepressant"}) + "\n\n")
    a = load_triples_file(kb, tmp_path/"a.csv"); b = load_triples_file(kb, tmp_path/"b.jsonl")
    assert (a["triples"], a["duplicates_merged"], b["triples"]) == (2, 1, 1)
    assert kb.get_entity("drug:ssri").type == "drug_class"
    assert kb.get_triple(Triple("cond:x", "has_symptom", "low mood").id).text == "Low mood is typical of X."


@pytest.mark.parametrize("name,content,expect", [
    ("missing_col.csv", "head,tail\ncond:x,y\n", "missing_col.csv:1: field 'relation'"),
    ("short_row.csv", "head,relation,tail\ncond:x,r,y\ncond:x,r\n", "short_row.csv:3: field 'tail'"),
    ("empty_field.csv", "head,relation,tail\ncond:x,,y\n", "empty_field.csv:2: field 'relation': empty"),
    ("unknown_head.csv", "head,relation,tail\ncond:x,r,y\ncond:nobody,r,y\n", "unknown_head.csv:3: field 'head': unknown relation endpoint"),
    ("unknown_tail.jsonl", '{"head": "cond:x", "relation": "r", "tail": "cond:ghost"}\n', "unknown_tail.jsonl:1: field 'tail': unknown relation endpoint"),
    ("bad_line.jsonl", '{"head": "cond:x", "relation": "r", "tail": "y"}\n\n{"head": \n', "bad_line.jsonl:3: field '<json>'"),
    ("bad_relation.csv", "head,relation,tail\ncond:x,Treated By,y\n", "bad_relation.csv:2: field 'relation'"),
])
def test_bad_triples_files_name_file_line_field(tmp_path, name, content, expect):
    kb = KnowledgeBase(); kb.add_entity(Entity("cond:x", "X", "condition"))
    (tmp_path/name).write_text(content)
    with pytest.raises(InputError, match=expect.replace("(", r"\(").replace(")", r"\)")):
        load_triples_file(kb, tmp_path/name)


def test_bad_umls_and_curated_files(tmp_path):
    u = tmp_path/"umls"; shutil.copytree(UMLS, u)
    lines = (u/"MRCONSO.RRF").read_text().splitlines()
    lines[3] = lines[3].replace("|D003866|MSH|", "|D003866|")                          # drop a column on line 4
    (u/"MRCONSO.RRF").write_text("\n".join(lines) + "\n")
    with pytest.raises(KnowledgeError, match=r"MRCONSO.RRF:4: field 'CVF'"):
        load_umls(KnowledgeBase(), u)
    (tmp_path/"c.yaml").write_text("conditions:\n  - id: cond:a\n    name: A\n    source: https://a.org\n    icd10: [F32]\n"
                                   "  - id: not an id\n    name: B\n    source: https://b.org\n")
    with pytest.raises(KnowledgeError, match=r"c.yaml:6: field 'id'"):
        load_curated(KnowledgeBase(), tmp_path/"c.yaml")


def test_params_file_with_sources_and_bad_key(tmp_path):
    (tmp_path/"t.csv").write_text("head,relation,tail\ncond:panic_disorder,note,seen in params test\n")
    p = tmp_path/"p.yaml"
    p.write_text(yaml.safe_dump({"run": {"name": "kt", "results_dir": str(tmp_path/"res")},
                                 "knowledge": {"triples_files": [str(tmp_path/"t.csv")], "umls_dir": str(UMLS)}}))
    kb = load_knowledge(load_params(p))
    assert "umls:C1269683" in kb.entities and kb.facts_of("cond:panic_disorder", "note") == ["seen in params test"]
    p.write_text(yaml.safe_dump({"knowledge": {"rrf_kk": 5}}))
    with pytest.raises(ParamsError, match="did you mean .rrf_k."):
        load_params(p)
    p.write_text(yaml.safe_dump({"knowledge": {"text_dirs": [str(tmp_path/"nope")]}}))
    with pytest.raises(ParamsError, match="file not found"):
        load_params(p)


def test_smoke_and_tiny_params_have_knowledge_section():
    for name in ("smoke", "tiny"):
        P = load_params(ROOT/"params"/f"{name}.yaml")
        assert "knowledge" in P.raw and P.knowledge.eval_k >= 1


def test_retriever_contract_and_index_reuse(tmp_path):
    P = load_params(None, {"run": {"name": "r", "results_dir": str(tmp_path)},
                           "knowledge": {"icd10": False, "curated": False, "facts_files": [str(small_curated_file(tmp_path/"s.yaml"))],
                                         "expand_hops": 1, "expand_k": 3}}, check_paths=False)
    R = get_retriever(P)
    assert get_retriever(P) is R
    out = R.search(["sudden attacks of fear with a racing heart", "who can I call if I want to end my life", "zzzz"],
                   k_triples=4, k_chunks=2, expand=False)
    assert [o["query"] for o in out] == ["sudden attacks of fear with a racing heart", "who can I call if I want to end my life", "zzzz"]
    for o in out:
        assert len(o["triples"]) == 4 and len(o["chunks"]) == 2
        for t in o["triples"]: assert set(t) == {"id", "text", "head", "relation", "tail", "source", "score"}
        for c in o["chunks"]: assert set(c) == {"id", "title", "text", "source", "score"}
        assert [t["score"] for t in o["triples"]] == sorted((t["score"] for t in o["triples"]), reverse=True)
    assert out[0]["triples"][0]["head"] == "cond:panic_disorder"
    assert any("988" in t["text"] for t in out[1]["triples"])
    ex = R.search(["sudden attacks of fear with a racing heart"], k_triples=4)[0]["triples"]   # expand_hops=1 from params
    assert 4 < len(ex) <= 7
    assert (tmp_path/"r"/"knowledge"/"index"/"meta.json").exists()
    R2 = Retriever(R.kb, P.knowledge, tmp_path/"r"/"knowledge"/"index")
    assert R2.reused
    K2 = P.knowledge.model_copy(update={"embedder": embedder_path(P.knowledge.embedder)})   # same model, named by its path
    assert not Retriever(R.kb, K2, tmp_path/"r"/"knowledge"/"index").reused      # model name changed: rebuilt


def test_run_knowledge_writes_snapshot_and_eval(tmp_path):
    P = load_params(None, {"run": {"name": "k", "results_dir": str(tmp_path)},
                           "knowledge": {"icd10": False, "curated": False, "facts_files": [str(small_curated_file(tmp_path/"s.yaml"))]}},
                    check_paths=False)
    s = run_knowledge(P, progress=False)
    d = tmp_path/"k"/"knowledge"
    assert KnowledgeBase.load(d).hash == s["kb_hash"] == json.loads((d/"done.json").read_text())["kb_hash"]
    import pandas as pd
    ev = pd.read_csv(d/"retrieval_eval.csv")
    assert set(ev.retriever) == {"bm25", "dense", "hybrid"} and {"recall@10", "mrr@10"} <= set(ev.columns)
    assert s["eval_queries"] == len(eval_queries(KnowledgeBase.load(d)))
