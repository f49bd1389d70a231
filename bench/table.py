"""Prints bench/engine's table from its results: one JSON object a line, each
{"config", "label", "result"} with `result` the output of bench/reference.py or bench-engine.

Every measurement ran once per round; each side keeps its best median over the rounds. Ratios are
Rust speed over Python speed: above 1, Rust is faster.
"""

import json
import sys


def best(results, config, label, side, key, lowest):
    values = [
        r["result"][key]
        for r in results
        if r["config"] == config and r["label"] == label and r["result"]["side"] == side
    ]
    if not values:
        return None
    return min(values) if lowest else max(values)


def main():
    results = [json.loads(line) for line in open(sys.argv[1])]
    configs = list(dict.fromkeys(r["config"] for r in results))
    rows = []
    notes = []
    for config in configs:
        py = best(results, config, "sample", "python", "tokens_per_second", lowest=False)
        rs = best(results, config, "sample", "rust", "tokens_per_second", lowest=False)
        rows.append((config, "sampling, generated tokens/s", f"{py:.1f}", f"{rs:.1f}", f"{rs / py:.2f}"))
        py_pre = best(results, config, "sample", "python", "prefill_seconds", lowest=True)
        rs_pre = best(results, config, "sample", "rust", "prefill_seconds", lowest=True)
        rows.append((config, "  of which prefill, s", f"{py_pre:.3f}", f"{rs_pre:.3f}", f"{py_pre / rs_pre:.2f}"))
        for label, name in (("grpo", "GRPO step, s"), ("grpo-keep", "GRPO step, s (Python with TRL's logits_to_keep)")):
            py = best(results, config, label, "python", "median_seconds", lowest=True)
            rs = best(results, config, "grpo", "rust", "median_seconds", lowest=True)
            rows.append((config, name, f"{py:.3f}", f"{rs:.3f}", f"{py / rs:.2f}"))
            if label == "grpo":
                for key, part in (
                    ("median_forward_backward_seconds", "  of which forward + backward, s"),
                    ("median_clip_update_seconds", "  of which clip + AdamW, s"),
                ):
                    p = best(results, config, label, "python", key, lowest=True)
                    r = best(results, config, "grpo", "rust", key, lowest=True)
                    rows.append((config, part, f"{p:.3f}", f"{r:.3f}", f"{p / r:.2f}"))
        # Both sides decode greedily from the same weights: their tokens should agree.
        tokens = {
            r["result"]["side"]: r["result"]["tokens"]
            for r in results
            if r["config"] == config and r["label"] == "sample"
        }
        flat = {side: [t for row in rows_ for t in row] for side, rows_ in tokens.items()}
        same = sum(a == b for a, b in zip(flat["python"], flat["rust"]))
        notes.append(
            f"{config}: {len(flat['python'])} Python and {len(flat['rust'])} Rust tokens generated, "
            f"{same} identical"
        )
    header = ("config", "metric", "python", "rust", "ratio (rust speed / python)")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print(" | ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))))
    for note in notes:
        print(note)


if __name__ == "__main__":
    main()
