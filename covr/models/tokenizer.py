"""Tokenizers for the BERT-based text encoders of BLIP-2 (+[DEC]) and BLIP (+[DEC], [ENC])."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from transformers import AutoTokenizer, BertTokenizer, PreTrainedTokenizerBase

BOS_TOKEN = "[DEC]"
ENC_TOKEN = "[ENC]"


def build_tokenizer(source: str | Path | Sequence[str], family: str = "blip2") -> PreTrainedTokenizerBase:
    """BERT WordPiece tokenizer with the special tokens the family adds.

    source: a vocabulary given as a list of tokens (id order), a `vocab.txt` path, a folder
    written by `save_pretrained`, or a hub id (e.g. "bert-base-uncased").
    BLIP-2 adds `[DEC]` as bos token; BLIP adds `[DEC]` and then `[ENC]` (LAVIS's order)."""
    if isinstance(source, (list, tuple)):
        tokenizer = BertTokenizer(vocab={tok: i for i, tok in enumerate(source)}, do_lower_case=True)
    elif Path(source).is_file():
        # transformers 5 ignores `vocab_file=`; `vocab=` takes the path
        tokenizer = BertTokenizer(vocab=str(source), do_lower_case=True)
    else:
        tokenizer = AutoTokenizer.from_pretrained(str(source))
    if tokenizer.bos_token != BOS_TOKEN:
        tokenizer.add_special_tokens({"bos_token": BOS_TOKEN})
    if family == "blip" and ENC_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [ENC_TOKEN]})
    return tokenizer
