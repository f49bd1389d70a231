"""The Python side of `bench/engine`: times transformers' `generate` or one PyTorch GRPO step on a
model directory and prints one JSON object, the counterpart of `bench-engine` (rl/src/bin).

    python bench/reference.py --model DIR --mode sample|grpo [--batch 8] [--prompt-len 64]
        [--new-tokens 64] [--threads 2] [--repeats 5] [--warmup 1] [--device cpu|cuda]
        [--precision f32|bf16] [--logits-to-keep]

The batch comes from `prompt_token` and `advantage`, which bench-engine implements identically.

The GRPO step is what rl/tests/fixtures/make_grpo_reference.py runs through TRL's
`GRPOTrainer._compute_loss` (loss_type "dapo", beta 0, one optimiser step per round so the old
log-probabilities are the current ones detached), written out in plain PyTorch so the timing has
no TRL bookkeeping (metrics, entropy) in it; then `clip_grad_norm_` and `torch.optim.AdamW` with
their defaults, as the HF Trainer calls them. Like that script, the model computes logits for every
position and the completion's are sliced out; `--logits-to-keep` instead asks the model for the
completion positions only, as TRL's real trainer does (`logits_to_keep`), which skips the LM head
on the prompt.
"""

import argparse
import json
import os
import statistics
import time
import warnings

import torch
import transformers


def prompt_token(row, pos):
    return 3 + (row * 1009 + pos * 7919 + row * pos * 31) % 357


def advantage(row):
    return (row % 4) - 1.5


def parse():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--mode", choices=["sample", "grpo"], required=True)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--prompt-len", type=int, default=64)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--precision", choices=["f32", "bf16"], default="f32")
    p.add_argument("--logits-to-keep", action="store_true")
    return p.parse_args()


def timed(device, f):
    start = time.perf_counter()
    out = f()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


def bench_sample(args, model):
    ids = torch.tensor(
        [[prompt_token(r, p) for p in range(args.prompt_len)] for r in range(args.batch)],
        device=args.device,
    )
    mask = torch.ones_like(ids)

    def generate():
        # Greedy, KV cache on (transformers' default), exactly new_tokens tokens: min_new_tokens
        # only masks the end-of-sequence logit, which the bench models never pick anyway.
        return model.generate(
            input_ids=ids,
            attention_mask=mask,
            do_sample=False,
            max_new_tokens=args.new_tokens,
            min_new_tokens=args.new_tokens,
            eos_token_id=model.config.eos_token_id,
            pad_token_id=model.config.pad_token_id,
        )

    for _ in range(args.warmup):
        generate()
    seconds, rates = [], []
    for _ in range(args.repeats):
        s, out = timed(args.device, generate)
        new = out[:, args.prompt_len :]
        seconds.append(s)
        rates.append(new.numel() / s)
    # Diagnostic: the prefill alone, as generate() runs it (the LM head on the last position only).
    with torch.no_grad():
        prefill, _ = timed(args.device, lambda: model(input_ids=ids, attention_mask=mask, logits_to_keep=1))
    return {
        "side": "python",
        "mode": "sample",
        "threads": torch.get_num_threads(),
        "generated_tokens": new.numel(),
        "seconds": seconds,
        "median_seconds": statistics.median(seconds),
        "tokens_per_second": statistics.median(rates),
        "prefill_seconds": prefill,
        "tokens": new.tolist(),
    }


def bench_grpo(args, model):
    width = args.prompt_len + args.new_tokens
    keep = args.new_tokens
    ids = torch.tensor(
        [[prompt_token(r, p) for p in range(width)] for r in range(args.batch)], device=args.device
    )
    attention_mask = torch.ones_like(ids)
    completion_mask = attention_mask[:, -keep:].float()
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    advantages = torch.tensor([advantage(r) for r in range(args.batch)], device=args.device)[:, None]
    # The defaults bench-engine uses (swarm-rl's GrpoConfig): AdamW lr 1e-6, no weight decay,
    # clipping at global norm 1, ratio bounds 0.2 / 0.28.
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6, weight_decay=0.0)
    extra = {"logits_to_keep": keep + 1} if args.logits_to_keep else {}

    def forward_backward():
        logits = model(input_ids=ids, attention_mask=attention_mask, position_ids=position_ids, **extra).logits
        logits = logits[:, -keep - 1 : -1, :].float()
        targets = ids[:, -keep:]
        # TRL's selective_log_softmax for f32: gather minus logsumexp.
        logps = logits.gather(-1, targets[..., None]).squeeze(-1) - torch.logsumexp(logits, -1)
        ratio = torch.exp(logps - logps.detach())
        clipped = torch.clamp(ratio, 1 - 0.2, 1 + 0.28)
        per_token = -torch.min(ratio * advantages, clipped * advantages)
        loss = (per_token * completion_mask).sum() / completion_mask.sum().clamp(min=1.0)
        loss.backward()
        return loss.item()

    def update():
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        # As the HF Trainer: gradients are dropped after the step (set to None by default).
        optimizer.zero_grad()

    for _ in range(args.warmup):
        forward_backward()
        update()
    seconds, backward, updates = [], [], []
    for _ in range(args.repeats):
        b, loss = timed(args.device, forward_backward)
        u, _ = timed(args.device, update)
        seconds.append(b + u)
        backward.append(b)
        updates.append(u)
    return {
        "side": "python",
        "mode": "grpo",
        "threads": torch.get_num_threads(),
        "trained_tokens": args.batch * keep,
        "seconds": seconds,
        "median_seconds": statistics.median(seconds),
        "median_forward_backward_seconds": statistics.median(backward),
        "median_clip_update_seconds": statistics.median(updates),
        "last_loss": loss,
    }


def main():
    args = parse()
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(args.threads)
    warnings.filterwarnings("ignore")
    transformers.logging.set_verbosity_error()
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    model = transformers.AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype).to(args.device)
    model.train(args.mode == "grpo")
    bench = bench_sample if args.mode == "sample" else bench_grpo
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    result = bench(args, model)
    if args.device == "cuda":
        # What PyTorch's allocator handed out at most (weights included); scripts/gpu-check also
        # reads the whole process's memory from nvidia-smi, the figure both sides share.
        result["peak_allocated_bytes"] = torch.cuda.max_memory_allocated()
    print(json.dumps(result))


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
