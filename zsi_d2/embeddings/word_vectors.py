"""Static word vectors from a file (word2vec / GloVe / fastText), in one of two layouts.

* ZSI matrix layout (Zheng et al., "Zero-Shot Instance Segmentation", CVPR 2021; e.g.
  `word_w2v_withbg_48_17.txt`): a D x (1 + C) matrix, comma- or whitespace-separated text
  (np.loadtxt) or .npy. Column 0 is the background vector, the other columns follow the caller's
  `column_names` (background + the split's classes, seen then unseen).
* Plain text layout: one "word v1 ... vD" line per word (GloVe; word2vec text with its
  "count dim" header line is accepted too; .gz files are read transparently).
* word2vec binary layout (`.bin` / `.bin.gz`, e.g. GoogleNews-vectors-negative300.bin): a
  "count dim" header line, then per word its bytes, a space and D little-endian float32 values.
  Read by the same rules as the plain layout (only the needed words are kept).

Plain-layout names are resolved per synonym ("tv, monitor" -> "tv" and "monitor"): first as one
token ("traffic light", "traffic_light", case-insensitively), else as the raw mean of its words
("traffic" + "light"), splitting on underscores/hyphens as a last resort ("hair_drier").
Synonyms are averaged as unit vectors so a long-normed word cannot dominate.
"""
import gzip
import logging
import os
import re
from typing import Dict, List, Optional, Sequence, Set, Tuple

import numpy as np
import torch

from ..errors import InputFileNotFoundError, InputValueError
from .base import CFG_KEY, EmbeddingOptions, EmbeddingSource, MissingEmbeddingError, register_source, split_synonyms
from .cache import path_identity

__all__ = ["WordVectorSource", "detect_layout", "load_word_vector_matrix", "BACKGROUND"]

logger = logging.getLogger(__name__)

BACKGROUND = "background"
MATRIX, PLAIN = "matrix", "plain"
_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")
_FIELD_SEP = re.compile(r"[,\s]+")
_WORD_SEP = re.compile(r"[\s_\-]+")


def _open_text(path: str):
    if path.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, "r", encoding="utf-8", errors="replace")


def _first_lines(path: str, n: int = 2) -> List[str]:
    lines = []
    with _open_text(path) as f:
        for line in f:
            if line.strip():
                lines.append(line)
                if len(lines) == n:
                    break
    return lines


def _is_word2vec_binary(path: str) -> bool:
    return path.endswith((".bin", ".bin.gz"))


def _scan_binary_file(path: str, needed: Set[str], max_words: Optional[int] = None):
    """Vectors of the `needed` words of a word2vec binary file (streamed: GoogleNews is 3.6 GB)."""
    opener = gzip.open if path.endswith(".gz") else open
    vectors: Dict[str, np.ndarray] = {}
    with opener(path, "rb") as f:
        header = f.readline().split()
        if len(header) != 2 or not all(t.isdigit() for t in header):
            raise InputValueError(f"Word-vector file {path} is not a word2vec binary file (no 'count dim' header "
                                  f"line): point {CFG_KEY}.PATH to a valid file")
        count, dim = int(header[0]), int(header[1])
        for _ in range(count if max_words is None else min(count, max_words)):
            word = bytearray()
            while True:
                ch = f.read(1)
                if ch in (b" ", b""):
                    break
                if ch != b"\n":
                    word += ch
            values = f.read(4 * dim)
            if len(values) < 4 * dim:
                raise InputValueError(f"Word-vector file {path} ends inside the vector of "
                                      f"'{word.decode(errors='replace')}': the file is truncated, download it again")
            token = word.decode("utf-8", errors="replace")
            if token in needed and token not in vectors:
                vectors[token] = np.frombuffer(values, dtype="<f4").astype(np.float32)
    return vectors, dim


def detect_layout(path: str) -> str:
    """MATRIX when the file is .npy or its first line is all numbers, else PLAIN ("word v1 .." text
    or word2vec binary)."""
    if path.endswith(".npy"):
        return MATRIX
    if _is_word2vec_binary(path):
        return PLAIN
    lines = _first_lines(path)
    if not lines:
        raise InputValueError(f"Word-vector file {path} is empty: point {CFG_KEY}.PATH to a word-vector file")
    tokens = _FIELD_SEP.split(lines[0].strip())
    if not all(_NUMBER.match(t) for t in tokens):
        return PLAIN
    # word2vec text format: a "count dim" header followed by word lines.
    if len(tokens) == 2 and len(lines) > 1 and not _NUMBER.match(lines[1].split(None, 1)[0]):
        return PLAIN
    return MATRIX


def load_word_vector_matrix(path: str) -> np.ndarray:
    """The D x (1 + C) matrix of a ZSI-layout file, as float32."""
    if path.endswith(".npy"):
        matrix = np.load(path, allow_pickle=False)
    else:
        delimiter = "," if "," in _first_lines(path, 1)[0] else None
        matrix = np.loadtxt(path, dtype=np.float64, delimiter=delimiter, ndmin=2)
    if matrix.ndim != 2:
        raise InputValueError(f"Word-vector matrix {path} must be 2-D (D x (1 + C)), got shape {matrix.shape}: "
                              "save it as a D x (1 + C) matrix")
    return np.asarray(matrix, dtype=np.float32)


def _phrase_forms(part: str) -> List[str]:
    """Single-token spellings of a phrase, tried before averaging its words."""
    forms = [part, re.sub(r"\s+", "_", part)]
    return list(dict.fromkeys(f for form in forms for f in (form, form.lower())))


def _word_splits(part: str) -> List[List[str]]:
    """Ways to split a phrase into words: on whitespace, then also on underscores/hyphens."""
    splits = []
    for words in (part.split(), [w for w in _WORD_SEP.split(part) if w]):
        if words and words not in splits:
            splits.append(words)
    return splits


def _needed_tokens(class_names: Sequence[str]) -> Set[str]:
    needed = set()
    for name in class_names:
        for part in split_synonyms(name):
            needed.update(_phrase_forms(part))
            for words in _word_splits(part):
                needed.update(words)
                needed.update(w.lower() for w in words)
    return needed


def plain_file_dim(path: str) -> Optional[int]:
    """D of a "word v1 ... vD" file, from its first vector line (a word2vec header is skipped)."""
    if _is_word2vec_binary(path):
        return _scan_binary_file(path, set(), max_words=0)[1]
    vectors, dim = _scan_plain_file(path, set(), max_lines=2)
    return dim


def _scan_plain_file(path: str, needed: Set[str], max_lines: Optional[int] = None) -> Tuple[Dict[str, np.ndarray], Optional[int]]:
    """Read only the vectors of `needed` words: a 5 GB GloVe file must not be loaded whole."""
    vectors: Dict[str, np.ndarray] = {}
    dim = None
    with _open_text(path) as f:
        for lineno, line in enumerate(f):
            if max_lines is not None and lineno >= max_lines and dim is not None:
                break
            if lineno == 0:
                header = line.split()
                if len(header) == 2 and all(_NUMBER.match(t) for t in header):
                    continue  # word2vec "count dim" header
            if dim is None:
                fields = line.split()
                if not fields:
                    continue
                dim = len(fields) - 1
            head = line.split(None, 1)
            if not head or head[0] not in needed or head[0] in vectors:
                continue
            fields = line.split()
            if len(fields) != dim + 1:
                logger.warning("%s:%d: '%s' has %d values, expected %d; skipped", path, lineno + 1, head[0], len(fields) - 1, dim)
                continue
            vectors[head[0]] = np.asarray(fields[1:], dtype=np.float32)
    return vectors, dim


def _lookup(word: str, vectors: Dict[str, np.ndarray]) -> Optional[np.ndarray]:
    for key in (word, word.lower()):
        if key in vectors:
            return vectors[key]
    return None


def _resolve_phrase(part: str, vectors: Dict[str, np.ndarray]) -> Tuple[Optional[np.ndarray], List[str]]:
    """(vector, []) or (None, missing words of the finest split)."""
    for form in _phrase_forms(part):
        if form in vectors:
            return vectors[form], []
    missing: List[str] = [part]
    for words in _word_splits(part):
        found = [_lookup(w, vectors) for w in words]
        missing = [w for w, v in zip(words, found) if v is None]
        if not missing:
            return np.mean(np.stack(found), axis=0), []
    return None, missing


@register_source("word_vectors")
class WordVectorSource(EmbeddingSource):
    """Word vectors read from `path` (MODEL.ZERO_SHOT.EMBEDDING.PATH) in either layout."""

    def __init__(self, options: EmbeddingOptions):
        super().__init__(options)
        if not options.path:
            raise InputFileNotFoundError(
                f"SOURCE=word_vectors needs a word-vector file: set {CFG_KEY}.PATH to a ZSI matrix "
                "(D x (1+C) .txt/.npy) or a 'word v1 ... vD' text file (GloVe/word2vec)"
            )
        self.path = os.path.abspath(os.path.expanduser(options.path))
        if not os.path.isfile(self.path):
            raise InputFileNotFoundError(
                f"Word-vector file not found: {self.path} ({CFG_KEY}.PATH). Point it to a local file; "
                "nothing is downloaded"
            )
        self.layout = detect_layout(self.path)
        self.column_names = tuple(options.column_names) if options.column_names is not None else None

    def identity(self):
        return {
            "file": path_identity(self.path),
            "layout": self.layout,
            "columns": list(self.column_names) if (self.layout == MATRIX and self.column_names) else None,
        }

    def embed(self, class_names):
        if self.layout == MATRIX:
            return self._embed_matrix(class_names)
        return self._embed_plain(class_names)

    # -- ZSI matrix layout ---------------------------------------------------------------------
    def _infer_columns(self, ncols: int, class_names) -> Tuple[str, ...]:
        """Without column names, accept the one registered split that fits the file and names."""
        from ..data.splits import get_split, list_splits

        wanted = set(class_names) - {BACKGROUND}
        fits = {
            get_split(s).classes
            for s in list_splits()
            if 1 + len(get_split(s).classes) == ncols and wanted <= set(get_split(s).classes)
        }
        if len(fits) != 1:
            raise InputValueError(
                f"Word-vector matrix {self.path} ({ncols} columns: background + {ncols - 1} classes) "
                "needs to know which class each column holds: set MODEL.ZERO_SHOT.SPLIT to the split "
                "the file was made for (or pass column_names=('background',) + split.classes)"
            )
        columns = (BACKGROUND,) + next(iter(fits))
        logger.info("Columns of %s taken from the only registered split that fits", self.path)
        return columns

    def _embed_matrix(self, class_names):
        matrix = load_word_vector_matrix(self.path)
        dim, ncols = matrix.shape
        columns = self.column_names
        if columns is None and set(class_names) != {BACKGROUND}:
            columns = self._infer_columns(ncols, class_names)
        if columns is not None and len(columns) != ncols:
            hint = ""
            if dim == len(columns):
                hint = " The file looks transposed ((1+C) x D): save its transpose."
            raise InputValueError(
                f"Word-vector matrix {self.path} has {ncols} columns but {len(columns)} were expected "
                f"(background + {len(columns) - 1} classes of the split: {list(columns)[:4]}...). The ZSI "
                "layout is D x (1 + C), column 0 = background; use the file made for MODEL.ZERO_SHOT.SPLIT."
                + hint
            )
        exact, folded = {}, {}
        for j, c in enumerate(columns or ()):
            exact.setdefault(c, j)
            folded.setdefault(c.lower(), j)
        picks, missing = [], []
        for name in class_names:
            j = 0 if name == BACKGROUND else exact.get(name, folded.get(name.lower()))
            if j is None:
                missing.append(name)
            picks.append(j)
        if missing:
            raise MissingEmbeddingError(
                f"Classes {missing} have no column in word-vector matrix {self.path}; its columns are "
                f"{list(columns)}. Check MODEL.ZERO_SHOT.SPLIT and the class names."
            )
        return torch.from_numpy(np.ascontiguousarray(matrix[:, picks].T))

    # -- plain "word v1 .. vD" layout ----------------------------------------------------------
    def _embed_plain(self, class_names):
        scan = _scan_binary_file if _is_word2vec_binary(self.path) else _scan_plain_file
        vectors, dim = scan(self.path, _needed_tokens(class_names))
        if dim is None or dim < 1:
            raise InputValueError(f"Word-vector file {self.path} holds no 'word v1 ... vD' lines: point "
                                  f"{CFG_KEY}.PATH to a GloVe/word2vec text file or a ZSI matrix")
        rows, problems = [], []
        for name in class_names:
            parts = []
            for part in split_synonyms(name):
                vec, missing = _resolve_phrase(part, vectors)
                if vec is None:
                    problems.append(f"'{name}' (missing word(s): {missing})")
                    break
                norm = float(np.linalg.norm(vec))
                if norm == 0.0:
                    problems.append(f"'{name}' (zero vector for '{part}')")
                    break
                parts.append(vec / norm)
            else:
                rows.append(np.mean(np.stack(parts), axis=0))
        if problems:
            raise MissingEmbeddingError(
                f"No word vector for class {', '.join(problems)} in {self.path}. Rename the class, "
                "add the words to the file, or choose another MODEL.ZERO_SHOT.EMBEDDING.SOURCE."
            )
        return torch.from_numpy(np.stack(rows).astype(np.float32))
