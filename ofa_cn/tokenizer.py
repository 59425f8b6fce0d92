"""Chinese BERT wordpiece <-> ids <-> text, and the 30,325-symbol dictionary in its fixed order.

The ids are the checkpoint format: every released OFA-CN checkpoint indexes this table.

    0..3            <s> <pad> </s> <unk>          (fairseq's specials; bos=0 starts decoding)
    4..21131        the 21,128 bert-base-chinese wordpieces, id = vocab.txt line + 4
    21132           <mask>
    21133..29324    <code_0> .. <code_8191>       (VQGAN image codes)
    29325..30324    <bin_0> .. <bin_999>          (quantised box coordinates)

The original built the wordpiece block from a `dict.txt` in which the two vocab lines holding
U+2028 had become `""` and `"##"`; we register the same strings so later ids stay aligned. Text can
never produce them (U+2028 is whitespace to the tokenizer).
"""

from __future__ import annotations

import functools
import hashlib
import re
import unicodedata
from pathlib import Path
from typing import Iterable, Sequence

VOCAB_FILE = Path(__file__).parent / "assets" / "vocab.txt"
VOCAB_SHA256 = "45bbac6b341c319adc98a532532882e91a9cefc0329aa57bac9ae761c27b291c"
NUM_WORDPIECES = 21128
SPECIAL_SYMBOLS = ("<s>", "<pad>", "</s>", "<unk>")
BOS, PAD, EOS, UNK = 0, 1, 2, 3
WORDPIECE_OFFSET = len(SPECIAL_SYMBOLS)  # fairseq id = vocab line + 4
BERT_UNK = "[UNK]"
BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
DEFAULT_CODE_DICT_SIZE = 8192
DEFAULT_NUM_BINS = 1000
MAX_CHARS_PER_WORD = 100  # BERT: a longer whitespace-separated word becomes one [UNK]


def read_vocab(vocab_file: Path | str = VOCAB_FILE) -> list[str]:
    """The wordpieces of vocab.txt in file order.

    Split on "\\n" only: `str.splitlines` would also break on the U+2028 entries.
    """
    text = Path(vocab_file).read_text(encoding="utf-8")
    pieces = text.split("\n")
    if pieces and pieces[-1] == "":
        pieces.pop()
    if len(pieces) != NUM_WORDPIECES:
        raise ValueError(
            f"{vocab_file}: expected {NUM_WORDPIECES} wordpieces (bert-base-chinese vocab.txt), "
            f"found {len(pieces)}; use the vocab.txt shipped in ofa_cn/assets."
        )
    return pieces


def vocab_sha256(vocab_file: Path | str = VOCAB_FILE) -> str:
    return hashlib.sha256(Path(vocab_file).read_bytes()).hexdigest()


def _as_dict_symbol(piece: str) -> str:
    # fairseq read "<token> <count>" lines of a dict.txt in which U+2028 had been written as a
    # space, and split on the last space: "\u2028" -> "" and "##\u2028" -> "##".
    return piece.replace("\u2028", "")


def bin_symbol(k: int) -> str:
    return f"<bin_{k}>"


def code_symbol(k: int) -> str:
    return f"<code_{k}>"


@functools.lru_cache(maxsize=8)
def dictionary_symbols(
    num_bins: int = DEFAULT_NUM_BINS,
    code_dict_size: int = DEFAULT_CODE_DICT_SIZE,
    vocab_file: str = str(VOCAB_FILE),
) -> tuple[str, ...]:
    """Every symbol of the OFA-CN dictionary, index = id (30,325 with the defaults)."""
    symbols = list(SPECIAL_SYMBOLS)
    symbols += [_as_dict_symbol(p) for p in read_vocab(vocab_file)]
    symbols.append("<mask>")
    symbols += [code_symbol(i) for i in range(code_dict_size)]
    symbols += [bin_symbol(i) for i in range(num_bins)]
    return tuple(symbols)


def build_dictionary(
    num_bins: int = DEFAULT_NUM_BINS,
    code_dict_size: int = DEFAULT_CODE_DICT_SIZE,
    vocab_file: Path | str = VOCAB_FILE,
):
    """A fairseq `Dictionary` with exactly `dictionary_symbols()` in order (30,325 by default)."""
    from fairseq.data import Dictionary

    d = Dictionary()  # starts with <s> <pad> </s> <unk>
    symbols = dictionary_symbols(num_bins, code_dict_size, str(vocab_file))
    for sym in symbols[len(SPECIAL_SYMBOLS):]:
        # add_symbol on a known word would return the old id and shift every later one
        assert sym not in d.indices, f"duplicate dictionary symbol {sym!r}"
        d.add_symbol(sym, n=1)
    assert len(d) == len(symbols), f"dictionary has {len(d)} symbols, expected {len(symbols)}"
    return d


def _is_cjk(ch: str) -> bool:
    cp = ord(ch)
    return (
        0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
        or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
        or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F
    )


def _is_word_char(ch: str) -> bool:
    """ASCII letters/digits (and other non-CJK letters): between two of these a space is real."""
    return ch.isalnum() and not _is_cjk(ch) and unicodedata.east_asian_width(ch) not in ("W", "F")


_SPACE_RUN = re.compile(r"\s+")


class ChineseTokenizer:
    """Lower-cased BERT WordPiece with one token per Chinese character (the original `bpe=bert`).

    Args:
        num_bins, code_dict_size: sizes of the box-bin and image-code blocks of the dictionary
            (from the checkpoint's task config; 1000 and 8192 for every released checkpoint).
        vocab_file: bert-base-chinese vocab.txt.
    """

    def __init__(
        self,
        num_bins: int = DEFAULT_NUM_BINS,
        code_dict_size: int = DEFAULT_CODE_DICT_SIZE,
        vocab_file: Path | str = VOCAB_FILE,
    ):
        from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

        pieces = read_vocab(vocab_file)
        self.symbols = dictionary_symbols(num_bins, code_dict_size, str(vocab_file))
        self.indices = {s: i for i, s in enumerate(self.symbols)}
        self.num_bins = num_bins
        self.bin_offset = len(self.symbols) - num_bins
        self.unk_piece_id = pieces.index(BERT_UNK) + WORDPIECE_OFFSET  # 104, not <unk>=3
        wordpiece = models.WordPiece(
            {p: i for i, p in enumerate(pieces)},
            unk_token=BERT_UNK,
            max_input_chars_per_word=MAX_CHARS_PER_WORD,
        )
        tok = Tokenizer(wordpiece)
        # BertNormalizer: drop control chars, space around CJK ideographs, lower-case and strip
        # accents (strip_accents=None follows lowercase), as HF's slow BertTokenizer does.
        tok.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True
        )
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.add_special_tokens(list(BERT_SPECIALS))  # never split, as in BertTokenizer
        self._tok = tok

    def __len__(self) -> int:
        return len(self.symbols)

    def tokenize(self, text: str) -> list[str]:
        """Text -> wordpieces, e.g. `图片?` -> ['图', '片', '?']."""
        return self._tok.encode(text, add_special_tokens=False).tokens

    def encode(self, text: str) -> list[int]:
        """Text -> dictionary ids (no bos/eos). An unknown character becomes `[UNK]` (104)."""
        ids = self._tok.encode(text, add_special_tokens=False).ids
        return [i + WORDPIECE_OFFSET for i in ids]

    def encode_symbols(self, line: str) -> list[int]:
        """Whitespace-separated dictionary symbols -> ids, without wordpieces (`<bin_3> <bin_9>`).

        Raises:
            ValueError: a symbol that is not in the dictionary.
        """
        out = []
        for sym in line.split():
            if sym not in self.indices:
                raise ValueError(f"symbol {sym!r} is not in the OFA-CN dictionary ({len(self)} symbols)")
            out.append(self.indices[sym])
        return out

    def bin_id(self, k: int) -> int:
        if not 0 <= k < self.num_bins:
            raise ValueError(f"bin {k} outside [0, {self.num_bins})")
        return self.bin_offset + k

    def symbols_of(self, ids: Iterable[int], strip: Sequence[int] = (BOS, PAD, EOS)) -> list[str]:
        return [self.symbols[int(i)] for i in ids if int(i) not in strip]

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> text: `##` joined, no spaces between Chinese characters; bos/pad/eos dropped.

        Spaces survive only between two word characters (`a photo` stays, `红 色 t 恤` -> `红色t恤`).
        """
        text = " ".join(self.symbols_of(ids)).replace(" ##", "")
        text = _SPACE_RUN.sub(" ", text).strip()
        out = []
        for i, ch in enumerate(text):
            if ch == " ":
                left, right = text[i - 1], text[i + 1]
                keep = (_is_word_char(left) and _is_word_char(right)) or left == ">" or right == "<"
                if not keep:  # keep spaces between words and around <bin_k>/<code_k> symbols
                    continue
            out.append(ch)
        return "".join(out)


@functools.lru_cache(maxsize=4)
def get_tokenizer(num_bins: int = DEFAULT_NUM_BINS, code_dict_size: int = DEFAULT_CODE_DICT_SIZE) -> ChineseTokenizer:
    """A shared tokenizer for the packaged vocabulary (building one takes ~50 ms)."""
    return ChineseTokenizer(num_bins, code_dict_size)
