"""Training throughput of omind's SFT trainer against a plain TRL SFTTrainer script with the same settings.

For each variant it trains one epoch of LoRA SFT (r=16, all linear layers, batch 4, max_length 512, lr 5e-5,
assistant-only loss, fp32, no gradient checkpointing) on the smoke dataset's train split (or the toy dataset when
the smoke run has no dataset yet) and prints:
  - tokens/s: real (non-pad) tokens the model processed per second of training,
  - loss tokens/s: assistant tokens that carry a label per second,
  - tokens/cpu-s: the same per CPU-second of this process (robust when other jobs share the cores),
  - pad share: pad tokens / all tokens in the batches.
Variants: plain TRL (padded batches), plain TRL + packing (bfd), omind with padding (same settings as plain),
omind default (padding-free batches), omind + packing.
Run: .venv/bin/python benchmarks/train_bench.py [--n 48] [--model embedded:smollm2-135m-instruct]
"""
import argparse, os, tempfile, time
from pathlib import Path


def load_data(n, seed=0):
    from omind.core import project_root
    from omind.dataset import load_splits
    from omind.testing import toy_dataset
    p = project_root()/"results"/"smoke"/"dataset"/"hf"
    if p.is_dir() and any(p.iterdir()):
        ds, src = load_splits(p)["train"], str(p)
    else:
        ds, src = toy_dataset(max(n, 24), seed)["train"], "toy_dataset"
    ds = ds.shuffle(seed=seed).select(range(min(n, len(ds))))
    return ds.select_columns(["messages"]), src


def plain_trl(model_dir, ds, template_path, packing, bs, max_length):
    "What a user writes with TRL alone: SFTConfig + LoraConfig, the training template passed as chat_template_path."
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer
    args = SFTConfig(output_dir=tempfile.mkdtemp(), num_train_epochs=1, learning_rate=5e-5, weight_decay=0.01,
                     per_device_train_batch_size=bs, max_length=max_length, packing=packing, assistant_only_loss=True,
                     chat_template_path=template_path, bf16=False, gradient_checkpointing=False, report_to=[],
                     logging_steps=1, save_strategy="no", seed=0, disable_tqdm=True)
    return SFTTrainer(model=AutoModelForCausalLM.from_pretrained(model_dir), args=args, train_dataset=ds,
                      processing_class=AutoTokenizer.from_pretrained(model_dir),
                      peft_config=LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM"))


def omind_trainer(model_dir, ds, packing, padding_free, bs, max_length):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from omind.trainers import sft_trainer
    from omind.train_params import TrainParams
    T = TrainParams(epochs=1, batch_size=bs, max_length=max_length, packing=packing, padding_free=padding_free,
                    tensorboard=False, precision="fp32", warmup=0)
    return sft_trainer(AutoModelForCausalLM.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir), ds,
                       T=T, save_strategy="no", disable_tqdm=True)


def batch_counts(tr):
    "Real tokens, all tokens and loss tokens over one epoch of the trainer's dataloader."
    real = total = lab = 0
    for b in tr.get_train_dataloader():
        total += b["input_ids"].numel()
        real += int(b["attention_mask"].sum()) if "attention_mask" in b else b["input_ids"].numel()
        lab += int((b["labels"] != -100).sum())
    return real, total, lab


def measure(name, tr):
    real, total, lab = batch_counts(tr)
    t, c = time.perf_counter(), time.process_time(); out = tr.train()
    dt, dc = time.perf_counter() - t, time.process_time() - c
    r = {"variant": name, "steps": tr.state.global_step, "seconds": round(dt, 1), "tokens/s": round(real/dt, 1),
         "loss tokens/s": round(lab/dt, 1), "tokens/cpu-s": round(real/dc, 1), "pad share": round(1 - real/total, 3),
         "train loss": round(out.training_loss, 4)}
    print(r, flush=True)
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=48, help="train conversations (one epoch)")
    ap.add_argument("--model", default="embedded:smollm2-135m-instruct")
    ap.add_argument("--batch-size", type=int, default=4); ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--only", nargs="*", default=None, help="run only these variants")
    a = ap.parse_args()
    import torch
    from transformers import AutoTokenizer
    from omind.model_store import resolve_model
    from omind.trainers import training_chat_template
    model_dir = resolve_model(a.model)
    ds, src = load_data(a.n)
    tpl = Path(tempfile.mkdtemp())/"train_template.jinja"
    tpl.write_text(training_chat_template(AutoTokenizer.from_pretrained(model_dir)))
    print(f"model {a.model}; data {src}: {len(ds)} conversations; batch {a.batch_size}; max_length {a.max_length}; "
          f"torch threads {torch.get_num_threads()}, cores {os.cpu_count()}", flush=True)
    variants = {
        "plain TRL (padded)": lambda: plain_trl(model_dir, ds, str(tpl), False, a.batch_size, a.max_length),
        "omind (padded, same settings)": lambda: omind_trainer(model_dir, ds, False, False, a.batch_size, a.max_length),
        "omind default (padding-free)": lambda: omind_trainer(model_dir, ds, False, True, a.batch_size, a.max_length),
        "plain TRL + packing": lambda: plain_trl(model_dir, ds, str(tpl), True, a.batch_size, a.max_length),
        "omind + packing": lambda: omind_trainer(model_dir, ds, True, True, a.batch_size, a.max_length),
    }
    rows = [measure(k, f()) for k, f in variants.items() if not a.only or k in a.only]
    import pandas as pd
    df = pd.DataFrame(rows).set_index("variant")
    print("\n" + df.to_markdown())
    for col in ("tokens/s", "tokens/cpu-s"):
        base = df[col].get("plain TRL (padded)")
        if base:
            print(f"\nratio of {col} to plain TRL (padded):")
            for k in df.index: print(f"  {k}: {df.loc[k, col]/base:.2f}x")
        if "omind (padded, same settings)" in df.index and "omind default (padding-free)" in df.index:
            print(f"  padding-free vs padded (omind), {col}: {df.loc['omind default (padding-free)', col]/df.loc['omind (padded, same settings)', col]:.2f}x")
        if "plain TRL + packing" in df.index and "omind + packing" in df.index:
            print(f"  omind + packing vs plain TRL + packing, {col}: {df.loc['omind + packing', col]/df.loc['plain TRL + packing', col]:.2f}x")


if __name__ == "__main__":
    main()
