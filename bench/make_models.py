"""Writes the random-weight Qwen2 models that `bench/engine` times, into a directory outside the
clone (the mid-size one is about 400 MB).

    python bench/make_models.py OUT_DIR [NAME ...]

NAMEs default to tiny and mid (what `bench/engine` times); `qwen05b` is written only when asked
(scripts/gpu-check does, on the GPU machine). Everything is seeded, so a rerun writes the same weights; a model whose directory already holds
the same recipe (`bench-recipe.json`) is left alone.

- tiny: the shape of model/fixtures/tiny-qwen2 (hidden 64, 2 layers, vocab 384).
- mid: hidden 512, 8 layers, 8 query heads on 2 key/value heads, intermediate 1408 and Qwen's
  vocabulary of 151936, embeddings tied to the LM head as in Qwen2.5-0.5B.
- qwen05b: Qwen2.5-0.5B's shape (hidden 896, 24 layers, 14 query heads on 2 key/value heads,
  intermediate 4864, vocabulary 151936, tied embeddings): 494 M parameters, about 2 GB in f32.

Both use the tiny fixture's tokenizer (swarm-rl's sampler needs a tokenizer.json to know the
end-of-sequence tokens; the benchmark feeds token ids, never text). The weights are scaled up as in
model/fixtures/make_tiny_qwen2.py, so greedy decoding has clear winners and both implementations
pick the same tokens, and the LM-head rows of the end-of-sequence tokens are zeroed: their logit is
0 while the largest of the others is far above, so no completion ends early and both sides
generate exactly the requested number of tokens.
"""

import json
import pathlib
import shutil
import sys

import torch
import transformers

REPO = pathlib.Path(__file__).resolve().parents[1]
TOKENIZER = REPO / "model" / "fixtures" / "tiny-qwen2"
# <|endoftext|>, <|im_start|>, <|im_end|> of the tiny tokenizer; the sampler stops at the first
# and last, and the config's eos_token_id is <|im_end|>.
SPECIAL_IDS = [360, 361, 362]

COMMON = dict(
    max_position_embeddings=4096,
    rms_norm_eps=1e-6,
    rope_theta=10000.0,
    eos_token_id=362,
    bos_token_id=360,
    pad_token_id=360,
)

MODELS = {
    "tiny": dict(
        vocab_size=384,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=False,
        seed=1,
    ),
    "mid": dict(
        vocab_size=151936,
        hidden_size=512,
        intermediate_size=1408,
        num_hidden_layers=8,
        num_attention_heads=8,
        num_key_value_heads=2,
        tie_word_embeddings=True,
        seed=2,
    ),
    "qwen05b": dict(
        vocab_size=151936,
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        tie_word_embeddings=True,
        seed=3,
    ),
}
DEFAULT = ["tiny", "mid"]


def randomise(model, seed):
    """As model/fixtures/make_tiny_qwen2.py: weights large enough that every one matters."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            noise = torch.randn(param.shape, generator=gen)
            if name.endswith("norm.weight"):
                param.copy_(1.0 + 0.2 * noise)
            elif name.endswith("bias"):
                param.copy_(0.5 * noise)
            elif "embed_tokens" in name:
                param.copy_(noise)
            else:
                param.copy_(noise / param.shape[1] ** 0.5)
        # Zero logit for the special tokens: never the argmax of hundreds of random logits.
        model.get_output_embeddings().weight[SPECIAL_IDS] = 0.0


def write(out, name, recipe):
    directory = out / name
    stamp = json.dumps({"recipe": recipe, "torch": torch.__version__, "transformers": transformers.__version__}, sort_keys=True)
    if (directory / "bench-recipe.json").exists() and (directory / "bench-recipe.json").read_text() == stamp:
        return
    if directory.exists():
        shutil.rmtree(directory)
    params = {k: v for k, v in recipe.items() if k != "seed"}
    config = transformers.Qwen2Config(**{**COMMON, **params}, attn_implementation="sdpa")
    torch.manual_seed(recipe["seed"])
    model = transformers.Qwen2ForCausalLM(config).float().eval()
    randomise(model, recipe["seed"])
    model.save_pretrained(directory)
    (directory / "generation_config.json").unlink(missing_ok=True)
    shutil.copy(TOKENIZER / "tokenizer.json", directory / "tokenizer.json")
    shutil.copy(TOKENIZER / "tokenizer_config.json", directory / "tokenizer_config.json")
    (directory / "bench-recipe.json").write_text(stamp)


def main():
    out = pathlib.Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for name in sys.argv[2:] or DEFAULT:
        write(out, name, MODELS[name])


if __name__ == "__main__":
    main()
