"""Maps each corpus's own label names onto the canonical class list.

Corpora spell the same emotion differently (EmoDB `anger`, RAVDESS `angry`,
CREMA-D `ANG`). Built-in synonym groups tie the spellings together; the config's
`label_map` adds or overrides mappings. A label that maps to no canonical class is
dropped, and the converters report every dropped file.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from i2a_tf.config import ConfigError

SYNONYMS = {
    "anger": ("anger", "angry", "ang", "an"),
    "disgust": ("disgust", "disgusted", "dis", "di"),
    "fear": ("fear", "fearful", "afraid", "fea", "fe"),
    "happiness": ("happiness", "happy", "joy", "hap", "ha"),
    "sadness": ("sadness", "sad", "sa"),
    "neutral": ("neutral", "neu", "ne"),
    "surprise": ("surprise", "surprised", "su"),
    "pleasant_surprise": ("pleasant_surprise", "ps"),
    "calm": ("calm",),
    "boredom": ("boredom", "bored"),
    "contempt": ("contempt",),
}

_GROUP_OF = {word: group for group, words in SYNONYMS.items() for word in words}


def _group(label: str) -> str:
    key = label.strip().lower()
    return _GROUP_OF.get(key, key)


class LabelMap:
    """label name -> canonical class id, or None when the label is dropped."""

    def __init__(self, classes: Sequence[str], extra: Iterable[str] = ()):
        self.classes = tuple(classes)
        self._by_group = {_group(name): i for i, name in enumerate(self.classes)}
        self._explicit: dict[str, int | None] = {}
        for entry in extra:
            source, target = (part.strip() for part in entry.split(":"))
            if target not in self.classes:
                raise ConfigError(
                    f"--label_map entry '{entry}': '{target}' is not one of the "
                    f"classes {', '.join(self.classes)}")
            self._explicit[source.lower()] = self.classes.index(target)

    def class_id(self, label: str) -> int | None:
        key = label.strip().lower()
        if key in self._explicit:
            return self._explicit[key]
        return self._by_group.get(_group(key))
