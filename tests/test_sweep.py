"""Sweeps (omind.sweep): a two-variant sweep on params/tiny.yaml that differs only in a training setting builds
knowledge, synthesis, review and the dataset once and trains twice; a sweep killed in the middle resumes and
ends with the same table; and the paper-layout tables from hand-written report.json files, checked cell by cell."""
import json
from pathlib import Path
import pytest

from omind.core import read_json, atomic_write_json, load_params, get_stage
from omind.sweep_load import load_sweep
from omind.sweep import run_sweep, sweep_figures_main, store_dir, share_key
from omind.sweep_tables import sweep_tables, sweep_figures

ROOT = Path(__file__).resolve().parents[1]
DATA = ["knowledge", "synthesis", "review", "dataset", "rejected"]      # the stages upstream of train


def tiny_base(tmp: Path) -> Path:
    "params/tiny.yaml without its evaluate section (these tests never evaluate; report.json files are written by hand)."
    import yaml
    raw = yaml.safe_load((ROOT/"params"/"tiny.yaml").read_text()); raw.pop("evaluate", None)
    p = tmp/"tiny-base.yaml"; p.write_text(yaml.safe_dump(raw, sort_keys=False)); return p


def sweep_file(tmp: Path, body: str, name="tsweep", common: str = "") -> Path:
    p = tmp/f"{name}.yaml"
    p.write_text(f"name: {name}\nbase: {tiny_base(tmp)}\n"
                 f"set: {{run.results_dir: {tmp/'results'}, run.figures_dir: {tmp/'figures'}{common}}}\n" + body)
    return p


class Stop(KeyboardInterrupt):
    "Stands for a kill of the sweep process."


STABLE = ["variant", "run", "computed", "shared", "status"]


def test_sweep_shares_data_stages_and_resumes_after_a_kill(tmp_path):
    # two variants that differ only in the SFT learning rate; DPO off and no evaluate to keep the test short
    f = sweep_file(tmp_path, "stages: [knowledge, synthesis, review, dataset, rejected, train]\n"
                             "grid: {train.learning_rate: [0.001, 0.002]}\n", common=", train.dpo: false, rejected.enabled: false")
    sw = load_sweep(f)
    names = [v.name for v in sw.variants]
    assert names == ["learning_rate-0.001", "learning_rate-0.002"]
    runs = {v.name: tmp_path/"results"/v.P.run.name for v in sw.variants}

    def kill_at_second_train(variant, stage):
        if variant == names[1] and stage == "train": raise Stop()
    with pytest.raises(Stop): run_sweep(f, callback=kill_at_second_train)
    first = runs[names[0]]
    man = read_json(first/"manifest.json")["stages"]
    assert [man.get(s, {}).get("status") for s in DATA + ["train"]] == ["done"]*6, man
    finished = {s: read_json(first/s/"done.json")["finished"] for s in DATA}
    assert not (runs[names[1]]/"train"/"done.json").exists()

    table = run_sweep(f)                                   # the rerun finishes the sweep
    again = run_sweep(f, quiet=True)                       # and a third call finds everything up to date
    assert list(table["variant"]) == names and list(table["status"]) == ["done"]*2
    assert table[STABLE].equals(again[STABLE])
    assert again["up_to_date_now"].tolist() == [" ".join(DATA + ["train"])]*2
    assert (tmp_path/"results"/"tsweep"/"sweep.csv").exists()
    owner = sw.variants[0].P.run.name
    assert table["computed"].tolist() == [" ".join(DATA + ["train"]), "train"]
    assert table["shared"].tolist() == ["", " ".join(f"{s}<-{owner}" for s in DATA)]

    # the data stages ran once: one executed notebook each, the owner's finish times untouched by the rerun,
    # the other variants' folders are links into the store with their own keys
    for s in DATA:
        nb = f"notebooks/{get_stage(s).notebook}"
        assert [n for n in names if (runs[n]/nb).exists()] == [names[0]], s
        assert read_json(first/s/"done.json")["finished"] == finished[s]
        st = store_dir(sw, s, share_key(sw.variants[0].P, s))
        assert read_json(st/"done.json")["owner"] == owner
        for v in sw.variants[1:]:
            d = runs[v.name]/s
            links = [e for e in d.iterdir() if e.name not in ("stage.json", "done.json")]
            assert links and all(e.is_symlink() and e.resolve().parent == st.resolve() for e in links)
            man = read_json(runs[v.name]/"manifest.json")["stages"][s]
            assert man["status"] == "shared" and man["shared_with"] == owner
    # training ran twice, each with its own learning rate
    assert all((runs[n]/"notebooks"/"06_train.ipynb").exists() and (runs[n]/"train"/"done.json").exists() for n in names)
    assert [read_json(runs[n]/"manifest.json")["params"]["train"]["learning_rate"] for n in names] == [0.001, 0.002]


# ---- paper-layout tables from hand-written reports -------------------------------------------------------------

STUDENTS = ["meta-llama/Llama-3.1-8B-Instruct", "mistralai/Mistral-7B-Instruct-v0.3", "Qwen/Qwen2.5-7B-Instruct"]


def core_row(model, task, acc, f1, n, method="letter_calibrated"):
    return {"model": model, "set": "heldout_kb", "task": task, "method": method, "n": n, "accuracy": acc, "accuracy_lo": acc - 0.05,
            "accuracy_hi": acc + 0.05, "macro_f1": f1, "macro_f1_lo": f1 - 0.05, "macro_f1_hi": f1 + 0.05, "unparsable": 0}


def report(student, i, gate_ok):
    models = [{"name": "base", "model": student, "role": "baseline"}, {"name": "sft", "model": "train:sft", "role": "candidate"},
              {"name": "dpo", "model": "train:dpo", "role": "candidate"}]
    core = []
    for j, m in enumerate(("base", "sft", "dpo")):
        acc = 0.30 + 0.1*i + 0.02*j
        core += [core_row(m, "mcqa", acc, acc - 0.05, 400), core_row(m, "mcqa", 0.9, 0.9, 400, method="letter_raw"),
                 core_row(m, "classification", 0.05, 0.05, 200, method="label_ll"),                  # the label prior left in
                 core_row(m, "classification", acc + 0.2, acc + 0.1, 200, method="label_calibrated")]
    # field names as omind.evaluate writes them (n_instances, score_lo / score_hi; baseline, winrate_lo / winrate_hi)
    rubric = [{"model": m, "level": lv, "scheme": sc, "n_instances": 30, "score": 50.0 + 10*i + k, "score_lo": 40.0 + 10*i + k, "score_hi": 60.0 + 10*i + k,
               "gated": not gate_ok}
              for k, m in enumerate(("base", "sft", "dpo")) for lv in ("turn", "conversation") for sc in ("binary", "ten", "likert")]
    wins = [{"model": m, "baseline": o, "domain": "explanations", "n": 20, "win": 10 + i, "tie": 2, "lose": 8 - i,
             "winrate": (10 + i + 1)/20, "winrate_lo": 0.3, "winrate_hi": 0.8, "gated": not gate_ok}
            for m, o in (("sft", "base"), ("dpo", "base"), ("dpo", "sft"))]
    gate = {"passed": gate_ok, "reasons": [] if gate_ok else ["kappa 0.13 < 0.4"],
            "metrics": {"kappa": 0.8 if gate_ok else 0.13}, "thresholds": {"min_kappa": 0.4}}
    return {"run": f"paper-sweep-x{i}", "models": models, "core": core, "rubric": rubric, "winrates": wins, "judge_gate": gate,
            "controls": {"null": {"n": 20, "win": 9, "tie": 2, "lose": 9, "winrate": 0.5, "lo": 0.3, "hi": 0.7, "covers_parity": True},
                         "positive": {"n": 20, "winrate": 0.9, "lo": 0.75, "hi": 1.0, "gold_wins": 18}}}


@pytest.fixture
def paper_layout(tmp_path):
    f = sweep_file(tmp_path, "grid:\n  models.student.model: [%s]\n" % ", ".join(STUDENTS), name="psweep")
    sw = load_sweep(f)
    for i, v in enumerate(sw.variants):
        d = tmp_path/"results"/v.P.run.name/"evaluate"; d.mkdir(parents=True)
        atomic_write_json(d/"report.json", report(STUDENTS[i], i, gate_ok=(i != 1)))     # Mistral's judge failed its gate
    return f, sw, tmp_path


def test_paper_tables_cell_by_cell(paper_layout):
    f, sw, tmp = paper_layout
    assert [v.name for v in sw.variants] == ["Llama-3.1-8B-Instruct", "Mistral-7B-Instruct-v0.3", "Qwen2.5-7B-Instruct"]
    T = sweep_tables(f)
    acc = T["core_accuracy"]
    assert list(acc.columns) == ["variant", "model", "heldout_kb mcqa", "heldout_kb classification"]
    assert len(acc) == 9                                            # 3 students x (base, sft, dpo)
    for i, v in enumerate(sw.variants):
        for j, m in enumerate(("base", "sft", "dpo")):
            row = acc[(acc["variant"] == v.name) & (acc["model"] == m)].iloc[0]
            a = 0.30 + 0.1*i + 0.02*j                                   # headline method: letter_calibrated, not letter_raw's 0.9
            assert row["heldout_kb mcqa"] == f"{a:.3f} [{a - .05:.3f}, {a + .05:.3f}] n=400"
            assert row["heldout_kb classification"] == f"{a + .2:.3f} [{a + .15:.3f}, {a + .25:.3f}] n=200"   # label_calibrated, not label_ll
            f1 = T["core_f1"][(T["core_f1"]["variant"] == v.name) & (T["core_f1"]["model"] == m)].iloc[0]
            assert f1["heldout_kb mcqa"] == f"{a - .05:.3f} [{a - .1:.3f}, {a:.3f}] n=400"
    rub = T["rubric"]
    assert list(rub.columns) == ["variant", "model"] + [f"{lv} {sc}" for lv in ("turn", "conversation") for sc in ("binary", "ten", "likert")]
    for i, v in enumerate(sw.variants):
        for k, m in enumerate(("base", "sft", "dpo")):
            row = rub[(rub["variant"] == v.name) & (rub["model"] == m)].iloc[0]
            for c in rub.columns[2:]:
                if i == 1: assert row[c] == "gated: judge failed calibration (kappa 0.13 < 0.4)"
                else: assert row[c] == f"{50 + 10*i + k:.3f} [{40 + 10*i + k:.3f}, {60 + 10*i + k:.3f}] n=30"
    win = T["winrates"]
    assert list(win.columns) == ["variant", "model", "vs base (explanations)", "vs sft (explanations)"]
    for i, v in enumerate(sw.variants):
        sft = win[(win["variant"] == v.name) & (win["model"] == "sft")].iloc[0]
        dpo = win[(win["variant"] == v.name) & (win["model"] == "dpo")].iloc[0]
        if i == 1:
            assert dpo["vs sft (explanations)"] == sft["vs base (explanations)"] == "gated: judge failed calibration (kappa 0.13 < 0.4)"
            continue
        cell = f"{10 + i}/2/{8 - i} win rate {(11 + i)/20:.3f} [0.300, 0.800] n=20"
        assert sft["vs base (explanations)"] == dpo["vs base (explanations)"] == dpo["vs sft (explanations)"] == cell
        assert sft["vs sft (explanations)"] == "—"
    assert T["judge"]["judge_passed"].tolist() == [True, False, True]
    assert T["judge"]["null_winrate"].tolist() == ["0.500 [0.300, 0.700] n=20"]*3
    # gated numbers never reach the printed tables (the long form keeps them, flagged)
    assert not rub[rub["variant"] == sw.variants[1].name].iloc[:, 2:].apply(lambda c: c.str.contains(r"\d\.\d{3} \[")).any().any()
    assert T["rubric_long"].groupby("variant")["gated"].all().to_dict() == {v.name: i == 1 for i, v in enumerate(sw.variants)}


def test_sweep_figures_files(paper_layout, capsys):
    f, sw, tmp = paper_layout
    assert sweep_figures_main(str(f)) == 0
    out = tmp/"figures"/"psweep"
    printed = capsys.readouterr().out.split()
    for name in ("core_accuracy", "core_f1", "rubric", "winrates", "judge"):
        for ext in ("csv", "md", "tex"): assert (out/f"{name}.{ext}").exists() and str(out/f"{name}.{ext}") in printed
    for name in ("core_accuracy", "rubric", "winrates"): assert (out/f"{name}.png").exists() and (out/f"{name}.pdf").exists()
    md = (out/"rubric.md").read_text()
    assert "judge failed calibration (kappa 0.13 < 0.4)" in md and "Mistral-7B-Instruct-v0.3" in md
    assert (out/"core_accuracy.tex").read_text().startswith("\\begin{tabular}")


def test_sweep_errors_name_file_and_line(tmp_path):
    from omind.sweep_load import SweepError
    from omind.sweep import add_sweep_parser, sweep_main
    f = sweep_file(tmp_path, "variants:\n  - {name: a}\n  - {name: b, set: {train.learning_rat: 0.1}}\n")
    with pytest.raises(SweepError, match=r"tsweep.yaml:6: variant 'b': --set train.learning_rat=0.1: unknown key 'train.learning_rat' \(did you mean 'learning_rate'\?\)"):
        load_sweep(f)
    import argparse
    ap = argparse.ArgumentParser(); add_sweep_parser(ap.add_subparsers(dest="cmd"))
    assert sweep_main(ap.parse_args(["sweep", str(f)])) == 1
    assert sweep_main(ap.parse_args(["sweep", str(tmp_path/"nope.yaml")])) == 1
