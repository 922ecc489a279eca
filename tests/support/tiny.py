"""Tiny random causal LMs with a locally trained tokenizer: real transformers models, no hub access."""

from __future__ import annotations

from pathlib import Path

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

CORPUS = [
    "The capital of France is Paris.",
    "Write a short poem about the sea.",
    "What is the boiling point of water?",
    "Explain reinforcement learning from human feedback in one sentence.",
    "A reward model scores answers.",
    "Annotators rank candidate answers in Label Studio.",
    "The quick brown fox jumps over the lazy dog.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9. Punctuation: , . ; : ! ? ' \" ( ) [ ] { }",
    "user assistant system hello thanks please answer question why how what when where who",
]


def build_tiny_model(out: Path, seed: int = 0) -> Path:
    """Train a byte-level BPE tokenizer on CORPUS and save it with a 2-layer GPT-2 of random weights."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        CORPUS * 4,
        trainers.BpeTrainer(
            vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    tokenizer.chat_template = CHATML
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=512,
        n_embd=64,
        n_layer=2,
        n_head=2,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = GPT2LMHeadModel(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


# The training sizes for tiny models: a step or two of each recipe (the end-to-end tests and bench/training.py)
SMALL = {"max_steps": 1, "per_device_train_batch_size": 2, "learning_rate": 1e-3}
TINY_TRAIN = {
    "reward": {**SMALL, "max_steps": 2, "max_length": 96},
    "ppo": {**SMALL, "response_length": 8, "num_ppo_epochs": 1, "max_prompt_length": 64},
    "dpo": {**SMALL, "max_length": 96},
    "grpo": {**SMALL, "max_completion_length": 8, "num_generations": 2, "mask_truncated_completions": False},
    "rloo": {**SMALL, "max_completion_length": 8, "num_generations": 2, "mask_truncated_completions": False},
    "sft": {**SMALL, "max_length": 96},
}
