"""Text <-> token ids with the checkpoint's own `tokenizer.json` (the `tokenizers` library).

GLM-4.1V's tokenizer is a byte-level BPE with ~150k entries whose special tokens (docs/glm41v.md §7.2) frame the prompt:
`[gMASK]<sop>` opens it, `<|system|>`, `<|user|>`, `<|assistant|>` open turns, `<|begin_of_image|><|image|>
<|end_of_image|>` stand for an image. The real `tokenizer.json` (~20 MB) ships with the checkpoint; this module
loads it, and `train_tokenizer` builds a small one with the same special tokens for tests and the tiny model.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Iterable, Sequence

from .errors import TokenizerError

# The special tokens a GLM-4.1V prompt uses, in the order `train_tokenizer` gives them ids 0, 1, 2, ...
SPECIAL_TOKENS = (
    "<|endoftext|>", "<|user|>", "<|assistant|>", "<|system|>", "[gMASK]", "<sop>", "<|observation|>",
    "<|begin_of_image|>", "<|end_of_image|>", "<|image|>", "<|begin_of_video|>", "<|end_of_video|>", "<|video|>",
)
# Not special (they survive skip_special_tokens), but single tokens in GLM-4.1V's vocabulary.
THINKING_TOKENS = ("<think>", "</think>", "<answer>", "</answer>")


class Tokenizer:
    """A thin wrapper over `tokenizers.Tokenizer` with the calls the processor and generation need."""

    def __init__(self, backend, source: str = "<memory>"):
        self.backend = backend  # tokenizers.Tokenizer
        self.source = source

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> "Tokenizer":
        from tokenizers import Tokenizer as Backend

        path = Path(folder) / "tokenizer.json"
        if not path.is_file():
            raise TokenizerError(f"{path} not found: a checkpoint folder must contain the tokenizer.json it was "
                                 "trained with")
        try:
            backend = Backend.from_file(str(path))
        except Exception as e:  # the Rust side raises its own exception type
            raise TokenizerError(f"cannot read {path}: {e}") from e
        return cls(backend, str(path))

    def save(self, folder: str | Path, eos_token: str = "<|endoftext|>", pad_token: str = "<|endoftext|>") -> None:
        """Write tokenizer.json and a tokenizer_config.json that transformers' PreTrainedTokenizerFast reads."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.backend.save(str(folder / "tokenizer.json"))
        config = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": eos_token, "pad_token": pad_token,
                  "padding_side": "left", "clean_up_tokenization_spaces": False, "model_max_length": 65536}
        (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")

    # ------------------------------------------------------------------ the calls

    def encode(self, text: str, special_tokens: bool = True) -> list[int]:
        """Token ids of `text`, with no extra special tokens added (the chat format writes them itself).

        `special_tokens=True`: a special token's string in `text` (`<|user|>`) becomes its id, as in a prompt the
        chat format wrote. `False`: it is tokenized as the plain characters it is made of (user text)."""
        if special_tokens:
            return self.backend.encode(text, add_special_tokens=False).ids
        before = self.backend.encode_special_tokens
        self.backend.encode_special_tokens = True  # the tokenizers switch: special tokens are not matched
        try:
            return self.backend.encode(text, add_special_tokens=False).ids
        finally:
            self.backend.encode_special_tokens = before

    def special_tokens(self) -> list[str]:
        """The strings of the tokenizer's special added tokens (`[gMASK]`, `<|user|>`, `<|image|>`, ...)."""
        return [t.content for t in self.backend.get_added_tokens_decoder().values() if t.special]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False,
               clean_up_tokenization_spaces: bool | None = None) -> str:
        """Text of one sequence of ids (a list, a 1-D tensor or array). `clean_up_tokenization_spaces` is taken as
        transformers takes it for a byte-level BPE tokenizer like GLM's: never applied, since it would strip spaces
        before punctuation from real text; True says so in a warning."""
        if clean_up_tokenization_spaces:
            warnings.warn("clean_up_tokenization_spaces=True is not applied: this is a byte-level BPE tokenizer, "
                          "whose decoded text already has the right spaces (transformers ignores it for such "
                          "tokenizers as well)", stacklevel=3)
        return self.backend.decode(self._check_ids(ids), skip_special_tokens=skip_special_tokens)

    def _check_ids(self, ids) -> list[int]:
        if hasattr(ids, "tolist"):  # torch tensors, numpy arrays
            ids = ids.tolist()
        if isinstance(ids, int) and not isinstance(ids, bool):
            ids = [ids]
        if not isinstance(ids, (list, tuple)):
            raise TokenizerError(f"decode() takes a sequence of token ids, got {type(ids).__name__}")
        for i in ids:
            if isinstance(i, bool) or not isinstance(i, int):
                hint = "; use batch_decode() for a batch" if isinstance(i, (list, tuple)) else ""
                raise TokenizerError(f"decode() takes integer token ids, got {type(i).__name__} {i!r:.40}{hint}")
            if i < 0 or i >= 1 << 32:
                raise TokenizerError(f"token id {i} is not a token id (they are 0 .. {self.max_id} in {self.source})")
        # Ids past the tokenizer's last one (a model's vocabulary is often larger: padding rows) decode to nothing,
        # as in transformers, so that a stream or a batch of generated ids can always be shown.
        return list(ids)

    def token_to_id(self, token: str) -> int:
        i = self.backend.token_to_id(token)
        if i is None:
            raise TokenizerError(f"token {token!r} is not in the vocabulary of {self.source}; is this a GLM-4.1V "
                                 "tokenizer.json?")
        return i

    def id_to_token(self, i: int) -> str | None:
        return self.backend.id_to_token(int(i))

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    @property
    def max_id(self) -> int:
        """The largest token id this tokenizer can produce (ids need not be dense)."""
        return max(self.backend.get_vocab(with_added_tokens=True).values())


def train_tokenizer(texts: Iterable[str], vocab_size: int = 600, extra_tokens: Sequence[str] = THINKING_TOKENS,
                    ) -> Tokenizer:
    """A small byte-level BPE with GLM-4.1V's special tokens at ids 0..12 (`SPECIAL_TOKENS` order), the learned
    vocabulary, then `extra_tokens` as ordinary (non-special) added tokens. Deterministic for the same texts."""
    from tokenizers import AddedToken, decoders, models, pre_tokenizers, trainers
    from tokenizers import Tokenizer as Backend

    backend = Backend(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    specials = [AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS]
    extras = [AddedToken(t, special=False, normalized=False) for t in extra_tokens]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(list(texts), trainer=trainer)
    backend.add_tokens(extras)  # single tokens that decoding keeps
    tok = Tokenizer(backend)
    wrong = {t: tok.token_to_id(t) for i, t in enumerate(SPECIAL_TOKENS) if tok.token_to_id(t) != i}
    if wrong:  # the trainer places special tokens first; if a tokenizers release changes that, say so
        raise TokenizerError(f"special tokens did not get ids 0..{len(SPECIAL_TOKENS) - 1}: {wrong}")
    return tok
