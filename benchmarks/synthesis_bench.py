"""Synthesis throughput: batched (one chat call per step for a whole chunk) vs one sample at a time.

Runs retrieve -> prune -> generate for the same seeds twice with the embedded teacher, no response cache:
  (a) batched: each task's seeds go to the model together (batch_size = --batch),
  (b) one at a time: each sample on its own, batch size 1 (the naive loop).
Prints, per task and overall, samples/min, prompt and generated tokens, generated tokens/s and the speed-up.
On a CPU, prompt tokens (prefill) cost the same batched or not; only decode steps are shared by a batch, so the
speed-up of a task grows with its generated / prompt token ratio. The seeds come from the knowledge stage of
--params when it has run, else from the small toy knowledge base of omind.testing (same prompts and lengths).

One sample at a time is slow, so it runs on the first --n-single seeds of each task only; both are compared as
samples per minute.

    .venv/bin/python benchmarks/synthesis_bench.py [--n 24] [--n-single 4] [--batch 32] [--tasks all] [--params params/smoke.yaml]
"""
import argparse, json, os, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

class Counting:
    "Wraps a backend: counts chat calls, keeps every prompt and output, for token accounting."
    def __init__(self, llm): self.llm, self.name, self.prompts, self.outputs, self.calls = llm, llm.name, [], [], 0
    def chat(self, convs, cfg, progress=False):
        out = self.llm.chat(convs, cfg); self.calls += 1
        self.prompts += [self.llm.prompt(c) for c in convs]; self.outputs += out; return out

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=24, help="samples per task, batched")
    ap.add_argument("--n-single", type=int, default=4, help="samples per task, one at a time (the first of the --n)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--tasks", default="all", help="comma-separated task families, or all (every registered family)")
    ap.add_argument("--params", default="params/smoke.yaml")
    ap.add_argument("--model", default="embedded:smollm2-135m-instruct")
    a = ap.parse_args()
    import torch
    from omind.core import load_params, run_dir, ModelSpec
    from omind.backends import make_llm
    from omind.synthesis import make_seeds, synthesize_chunk
    from omind.tasks import task_names
    P = load_params(ROOT/a.params)
    S = P.synthesis
    tasks = task_names() if a.tasks == "all" else a.tasks.split(",")
    S = S.model_copy(update={"n": {t: (a.n if t in tasks else 0) for t in task_names()}, "sources": {}})
    kb = retriever = None
    if (run_dir(P, "knowledge")/"done.json").exists():
        try:
            from omind.kb_build import load_knowledge
            from omind.retrieval import get_retriever
            kb, retriever, src = load_knowledge(P), get_retriever(P), f"knowledge stage of run {P.run.name}"
        except Exception as e: print(f"(knowledge stage unusable: {e}; using the toy knowledge base)")
    if kb is None:
        from omind.testing import toy_knowledge, ToyRetriever
        kb = toy_knowledge(); retriever = ToyRetriever(kb); src = "toy knowledge base"
    seeds, _ = make_seeds(kb, S, P.run.seed)
    n = sum(len(seeds[t]) for t in tasks)
    print(f"{n} samples ({', '.join(f'{t}={len(seeds[t])}' for t in tasks)}) from the {src}; model {a.model}; "
          f"torch threads {torch.get_num_threads()}; load avg {os.getloadavg()[0]:.1f}")
    res, per = {}, {}
    for mode, bs in (("batched", a.batch), ("one_at_a_time", 1)):
        llm = Counting(make_llm(ModelSpec(model=a.model, batch_size=bs)))
        recs, T = [], 0.0
        for t in tasks:
            n0, c0, t0 = len(llm.outputs), llm.calls, time.time()
            if mode == "batched": rs = synthesize_chunk(seeds[t], llm, retriever, kb, S, P.run.seed)
            else: rs = [r for s in seeds[t][:a.n_single] for r in synthesize_chunk([s], llm, retriever, kb, S, P.run.seed)]
            dt = time.time() - t0; T += dt; recs += rs
            pt, gt = llm.llm.count_tokens(llm.prompts[n0:]), llm.llm.count_tokens(llm.outputs[n0:])
            per.setdefault(t, {})[mode] = {"samples": len(rs), "seconds": round(dt, 1), "chat_calls": llm.calls - c0,
                                           "prompt_tokens": pt, "generated_tokens": gt, "samples_per_min": round(len(rs) / dt * 60, 2)}
            print(f"{mode:>14} {t:>14}: {len(rs)} samples in {dt:6.1f}s ({llm.calls - c0} chat calls, {pt/len(rs):.0f} prompt + "
                  f"{gt/len(rs):.0f} generated tokens a sample): {len(rs)/dt*60:6.1f} samples/min, {gt/dt:6.1f} generated tokens/s", flush=True)
        toks = llm.llm.count_tokens(llm.outputs)
        res[mode] = {"samples": len(recs), "ok": sum(r["status"] == "ok" for r in recs), "seconds": round(T, 1),
                     "chat_calls": llm.calls, "prompt_tokens": llm.llm.count_tokens(llm.prompts), "generated_tokens": toks,
                     "samples_per_min": round(len(recs) / T * 60, 2), "tokens_per_s": round(toks / T, 1)}
        print(f"{mode:>14} {'all':>14}: {res[mode]['samples']} samples ({res[mode]['ok']} ok) in {T:.1f}s, {llm.calls} chat calls: "
              f"{res[mode]['samples_per_min']} samples/min, {res[mode]['tokens_per_s']} generated tokens/s", flush=True)
    for t in tasks:
        per[t]["speedup"] = round(per[t]["batched"]["samples_per_min"] / per[t]["one_at_a_time"]["samples_per_min"], 2)
        print(f"speed-up {t:>14}: {per[t]['speedup']:.1f}x")
    sp = res["batched"]["samples_per_min"] / res["one_at_a_time"]["samples_per_min"]
    print(f"speed-up batched vs one at a time, all tasks: {sp:.1f}x (samples/min); load avg {os.getloadavg()[0]:.1f}")
    print(json.dumps({**res, "per_task": per, "speedup": round(sp, 2)}))

if __name__ == "__main__": main()
