"""Writes tests/data/tokenizers/: three tokenizer.json fixtures and the ids the Hugging Face
`tokenizers` package (an independent implementation) gives for a set of hard texts.

  qwen3/    Qwen3's byte-level BPE (NFC, Split regex with \\p{L}/\\p{N}, single digits, ChatML
            specials) with its merges cut to the first 20,000 (and the vocab to what they use)
            so the fixture stays small; the pipeline is the file's own.
  llama3/   the same vocabulary behind Llama-3's pre-tokenizer regex (digits in groups of up
            to three) and its <|begin_of_text|> template.
  sp32k/    the 32k SentencePiece-style BPE (Mistral 7B vocabulary: Prepend + Replace
            normalizer, byte_fallback, fuse_unk, <s> by TemplateProcessing), unchanged.

Run: v/bin/pip install tokenizers && v/bin/python tests/data/make_tokenizer_fixtures.py ../shared/tokenizers
"""
import json
import os
import shutil
import sys

from tokenizers import Tokenizer

src = sys.argv[1] if len(sys.argv) > 1 else "../shared/tokenizers"
here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tokenizers")

TEXTS = [
    "Hello, world!",
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n",
    "Numbers: 3.14159, 1234567890, -42 and 1e10; phone 555-0199.",
    "日本語のテキストと中文字符，还有한국어도 있습니다。",
    "Emoji: 😀👍🏽 🇫🇷 and ZWJ 👨‍👩‍👧‍👦!",
    "Combining: e\u0301 vs \u00e9, A\u030a, n\u0303o; Zalgo: Z\u0351\u0364a\u0306l\u0352g\u0305o",
    "   leading spaces, \t tabs\t\tand   runs    of spaces   ",
    "line one\nline two\r\nline three\n\n\nend",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "<s>[INST] What is 2+2? [/INST] 4</s>",
    "It's I'm we'll they've you'd SHE'S",
    "",
    " ",
    "a",
    "x" * 300,
    "Mixed: café naïve résumé — «quotes» “curly” ‘single’ …",
]


def trim_bytelevel(doc, keep):
    model = doc["model"]
    merges = model["merges"][:keep]
    vocab = model["vocab"]
    needed = set()
    for tok, i in vocab.items():
        if len(tok) == 1:
            needed.add(tok)
    for m in merges:
        a, b = (m.split(" ", 1) if isinstance(m, str) else m)
        needed.update((a, b, a + b))
    # Ids renumbered densely (tokenizers gives an added token the next free id after the
    # vocab, whatever the file says, so the ids must leave no gap).
    kept = sorted((i, t) for t, i in vocab.items() if t in needed)
    model["vocab"] = {t: n for n, (_, t) in enumerate(kept)}
    model["merges"] = merges
    for n, a in enumerate(doc["added_tokens"]):
        a["id"] = len(kept) + n
    return doc


def write(name, doc, config):
    d = os.path.join(here, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False)
    if config:
        with open(os.path.join(d, "tokenizer_config.json"), "w", encoding="utf-8") as f:
            json.dump(config, f, ensure_ascii=False, indent=1)
    tok = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    cases = []
    for t in TEXTS:
        with_special = tok.encode(t, add_special_tokens=True).ids
        without = tok.encode(t, add_special_tokens=False).ids
        cases.append({"text": t, "ids": with_special, "ids_no_special": without,
                      "decoded": tok.decode(with_special, skip_special_tokens=False)})
    with open(os.path.join(d, "expected.json"), "w", encoding="utf-8") as f:
        json.dump({"producer": "tokenizers " + __import__("tokenizers").__version__, "cases": cases}, f,
                  ensure_ascii=False, indent=1)
    print(name, os.path.getsize(os.path.join(d, "tokenizer.json")), "bytes,", len(cases), "cases")


def load(name):
    with open(os.path.join(src, name, "tokenizer.json"), encoding="utf-8") as f:
        doc = json.load(f)
    cfg_path = os.path.join(src, name, "tokenizer_config.json")
    cfg = json.load(open(cfg_path, encoding="utf-8")) if os.path.exists(cfg_path) else None
    return doc, cfg


qwen, qwen_cfg = load("qwen3-bytelevel-bpe")
qwen = trim_bytelevel(qwen, 20000)
small_cfg = {k: qwen_cfg[k] for k in ("bos_token", "eos_token", "chat_template", "pad_token") if k in qwen_cfg}
write("qwen3", qwen, small_cfg)

llama = json.loads(json.dumps(qwen))
llama["normalizer"] = None
llama["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
    {"type": "Split", "pattern": {"Regex": "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
     "behavior": "Isolated", "invert": False},
    {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}
llama["post_processor"] = {"type": "Sequence", "processors": [
    {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
    {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}},
                                               {"Sequence": {"id": "A", "type_id": 0}}],
     "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
     "special_tokens": {"<|endoftext|>": {"id": "<|endoftext|>", "ids": [qwen["added_tokens"][0]["id"]],
                                          "tokens": ["<|endoftext|>"]}}}]}
write("llama3", llama, None)

sp, sp_cfg = load("sentencepiece-bpe-32k")
write("sp32k", sp, sp_cfg)

# What transformers' apply_chat_template renders with Qwen3's own chat_template (chatml family).
from transformers import PreTrainedTokenizerFast  # noqa: E402

fast = PreTrainedTokenizerFast(tokenizer_file=os.path.join(here, "qwen3", "tokenizer.json"))
fast.chat_template = small_cfg["chat_template"]
CHATS = [
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi!"},
     {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "What is 2+2?\nThink."}],
    [{"role": "user", "content": "Hi!"}],
    [{"role": "user", "content": "Ünïcode 日本 😀"}, {"role": "assistant", "content": "ok"}],
]
chat_cases = [{"messages": m, "add_generation_prompt": g,
               "text": fast.apply_chat_template(m, tokenize=False, add_generation_prompt=g)}
              for m in CHATS for g in (True, False)]
with open(os.path.join(here, "qwen3", "chat_expected.json"), "w", encoding="utf-8") as f:
    json.dump({"producer": "transformers " + __import__("transformers").__version__, "cases": chat_cases}, f,
              ensure_ascii=False, indent=1)
print("qwen3 chat cases", len(chat_cases))

# The 32k vocabulary behind Digits + Metaspace pre-tokenizers and the Metaspace decoder (the
# Llama-2 / Mistral layout of older tokenizer.json files), instead of Prepend + Replace.
meta = json.loads(json.dumps(sp))
meta["normalizer"] = None
meta["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
    {"type": "Digits", "individual_digits": True},
    {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": False}]}
meta["decoder"] = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": False}
write("sp32k_metaspace", meta, None)
