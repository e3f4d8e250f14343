"""Core-item scoring speed of the evaluate stage on the embedded default (SmolLM2-135M-Instruct), in one process
(torch's default threads) and in `evaluate.core_workers` worker processes of one thread each.

Scores the same lettered MCQA items (built here, about as long as the smoke run's held-out items) with the response
cache off, checks that both ways give the same answers, and prints items/s.
Run: .venv/bin/python benchmarks/core_scoring_bench.py [--n 256] [--workers 2]
"""
import argparse, os, tempfile, time
from pathlib import Path
from omind.core import load_params, project_root, JsonlLog
from omind.eval_candidates import eval_models
from omind.eval_scoring import score_core, core_pool
from omind.tasks import get_task

SYMPTOMS = ["persistent low mood", "loss of interest", "racing thoughts", "trouble sleeping", "intrusive memories",
            "fear of social situations", "restlessness", "fatigue", "poor concentration", "panic attacks", "irritability",
            "feelings of worthlessness", "avoidance of reminders", "excessive worry", "changes in appetite"]
OPTIONS = ["Major depressive disorder", "Generalized anxiety disorder", "Post-traumatic stress disorder",
           "Social anxiety disorder", "Bipolar disorder", "Panic disorder", "Insomnia disorder", "Adjustment disorder"]

def items(n: int) -> list[dict]:
    "n four-option MCQA items in the MCQA family's evaluation form."
    out, fam = [], get_task("mcqa")
    for i in range(n):
        s = [SYMPTOMS[(i + k * 4) % len(SYMPTOMS)] for k in range(3)]
        opts = [OPTIONS[(i + k) % len(OPTIONS)] for k in range(4)]
        it = {"id": f"bench-{i}", "task": "mcqa", "source": "bench", "kind": "profile", "labels": [], "condition": "", "symptoms": s,
              "question": f"A {20 + i % 40}-year-old reports {s[0]}, {s[1]} and {s[2]} for several weeks (case {i}). Which condition fits best?",
              "options": opts, "label": opts[i % 4], "gold_letter": "ABCD"[i % 4]}
        it["messages"] = fam.eval_messages(it)
        out.append(it)
    return out

def timed(P, m, its, pool=None):
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter(); recs = score_core(P, JsonlLog(Path(d)/"s.jsonl"), {**m, "no_cache": True}, its, pool)
        return recs, time.perf_counter() - t

def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=256); ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    import torch
    P = load_params(project_root()/"params"/"smoke.yaml", sets=[f"evaluate.core_workers={a.workers}"])
    m = eval_models(P)[0][0]
    its = items(a.n)
    print(f"cores: {os.cpu_count()}, torch threads in this process: {torch.get_num_threads()}, items: {a.n}, chunk: {max(P.evaluate.chunk_size, 64)}")
    timed(P, m, its[:8])                                                     # load the model, warm up
    one, t1 = timed(P, m, its)
    print(f"one process ({torch.get_num_threads()} threads)      : {t1:6.1f} s  {a.n / t1:5.2f} items/s")
    with core_pool(P, [m]) as pool:
        timed(P, m, its[:64 * (a.workers - 1) + 1], pool)                    # one chunk per worker: start them, load the model in each
        par, t2 = timed(P, m, its, pool)
    print(f"{a.workers} worker processes (1 thread each): {t2:6.1f} s  {a.n / t2:5.2f} items/s  ({t1 / t2:.2f}x)")
    best = lambda rs: [max(r["letter_logprobs"], key=r["letter_logprobs"].get) for r in rs]
    agree = sum(x == y for x, y in zip(best(one), best(par)))
    print(f"same answer on {agree} of {a.n} items")

if __name__ == "__main__": main()
