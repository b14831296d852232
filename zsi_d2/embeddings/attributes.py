"""Multi-hot attribute vectors: "red circle" -> e_red + e_circle (normalised).

Why: on the synthetic zs_shapes benchmark every class is a combination of attributes that also
occur in seen classes, so this space is an oracle upper bound for transfer through class names,
free of any language model's quirks. The vocabulary is the sorted set of words in the names plus a
dedicated "background" dimension (so the background embedding is a unit vector orthogonal to
every class). Embed a whole split's class list, or pass `vocabulary`, so D is stable.
"""
import re
from typing import Iterable, List, Sequence, Tuple

import torch

from ..errors import InputValueError
from .base import EmbeddingSource, MissingEmbeddingError, register_source, split_synonyms

__all__ = ["AttributeSource", "attribute_vocabulary", "attribute_words"]

BACKGROUND = "background"
_WORD_SEP = re.compile(r"[\s_\-]+")


def attribute_words(phrase: str) -> List[str]:
    """Lower-cased words of one synonym; underscores and hyphens separate words too."""
    return [w for w in _WORD_SEP.split(phrase.strip().lower()) if w]


def attribute_vocabulary(class_names: Iterable[str]) -> Tuple[str, ...]:
    """Sorted words of all names, then "background" (unless a name already uses that word)."""
    words = sorted({w for name in class_names for part in split_synonyms(name) for w in attribute_words(part)})
    if BACKGROUND not in words:
        words.append(BACKGROUND)
    return tuple(words)


@register_source("attributes")
class AttributeSource(EmbeddingSource):
    """Multi-hot over `options.vocabulary`, or over the words of the names being embedded."""

    cacheable = False  # computing is cheaper than reading a file

    def identity(self):
        voc = self.options.vocabulary
        return {"vocabulary": list(voc) if voc is not None else None}

    def embed(self, class_names: Sequence[str]) -> torch.Tensor:
        vocabulary = self.options.vocabulary
        if vocabulary is None:
            vocabulary = attribute_vocabulary(class_names)
        index = {w: i for i, w in enumerate(vocabulary)}
        if len(index) != len(vocabulary):
            raise InputValueError(f"Attribute vocabulary (vocabulary) has duplicate words: {list(vocabulary)}; "
                                  "list each word once")
        out = torch.zeros(len(class_names), len(vocabulary))
        problems = []
        for row, name in enumerate(class_names):
            parts = split_synonyms(name)
            for part in parts:
                words = attribute_words(part)
                missing = [w for w in words if w not in index]
                if missing:
                    problems.append(f"'{name}' (missing word(s): {missing})")
                    break
                hot = torch.zeros(len(vocabulary))
                hot[[index[w] for w in set(words)]] = 1.0
                out[row] += hot / hot.norm()
            out[row] /= len(parts)
        if problems:
            raise MissingEmbeddingError(
                f"No attribute vector for class {', '.join(problems)}: the words are not in the "
                f"vocabulary {list(vocabulary)}. Embed the full split's class list or extend the vocabulary."
            )
        return out
