"""Audio: class folders of WAV files, a folder of WAV files labelled by their names (the Free Spoken Digit Dataset's
``{digit}_{speaker}_{index}.wav``), CSV/JSON Lines listings, and synthetic tones (no files needed), as records of an
audio file path (or a ``{"array", "sampling_rate"}`` dict) and a label (and, in listings, a transcript). Every file's
header is read when it is listed, so a file that is not a WAV file is named (or skipped and counted) before training
starts; the samples are read in DataLoader workers by the objective's collate, never here."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

from ptcli.data import records
from ptcli.data.sources.base import Log, Source
from ptcli.data.sources.files import FileSource
from ptcli.data.sources.folders import ClassFolders, class_folders, folder_stats
from ptcli.errors import PtcliError

AUDIO_SUFFIXES = (".wav", ".wave")
BAD_AUDIO_FIX = "Remove or replace the file, or set dataset.bad_audio=skip to skip and count such files"


class Checked:
    """Files that passed the header check, and the ones that were skipped (no WAV suffix, or unreadable)."""

    def __init__(self, policy: str, key: str):
        self.policy, self.key, self.other, self.bad = policy, key, [], []

    def ok(self, file: Path) -> bool:
        from ptcli.data.wav import unreadable_audio

        if file.suffix.lower() not in AUDIO_SUFFIXES:
            self.other.append(file)
            return False
        problem = unreadable_audio(file)
        if problem:
            if self.policy == "fail":
                raise PtcliError(f"'{file}' is not a WAV file ptcli can read ({problem})", where=self.key,
                                 fix=BAD_AUDIO_FIX)
            self.bad.append(file)
            return False
        return True

    def report(self, folder, log: Log) -> None:
        if self.other:
            log(f"skipped {len(self.other)} file(s) without a .wav suffix in {folder} (first: {self.other[0]})")
        if self.bad:
            log(f"warning: skipped {len(self.bad)} unreadable audio file(s) in {folder} (dataset.bad_audio=skip; "
                f"first: {self.bad[0]})")


@dataclass(eq=False)
class AudioFolder(ClassFolders):
    """Class folders of WAV files: ``<path>/<class>/*.wav`` (the splits as ``ClassFolders`` says)."""

    audio_column: str = "audio"
    bad_audio: Literal["fail", "skip"] = "fail"  # a .wav file that is no WAV: an error, or skipped and counted
    example = "*.wav"

    def folder_records(self, folder: Path, log: Log, key: str) -> Iterator[tuple[str, dict]]:
        checked, found = Checked(self.bad_audio, key), 0
        for name in class_folders(folder, key):
            clips = 0
            for file in sorted(p for p in (folder / name).rglob("*") if p.is_file()):
                if checked.ok(file):
                    clips += 1
                    yield str(file), {self.audio_column: str(file), self.label_column: name}
            if not clips:
                log(f"warning: class folder '{folder / name}' holds no WAV files; that class is left out")
            found += clips
        checked.report(folder, log)
        if not found:
            raise PtcliError(f"no WAV files in the class folders of '{folder}'", where=key,
                             fix="put WAV files in <folder>/<class>/ (the folder name is the label)")

    def reading_options(self) -> dict:
        return {"bad_audio": self.bad_audio}


@dataclass(eq=False)
class AudioFiles(Source):
    """A folder of WAV files (read recursively) labelled by their names: ``label_pattern``'s first group (or the
    whole match) is the label; by default the name up to its first underscore (FSDD's digit). Files whose name
    matches ``val_pattern`` are the validation split (a speaker held out: ``val_pattern=_jackson_`` for the Free
    Spoken Digit Dataset), else ``val_fraction`` is held out with a fixed seed. A WAV file whose name the label
    pattern does not match is skipped and counted."""

    path: str = "???"  # the folder of WAV files
    label_pattern: str = "^([^_]+)_"  # a regular expression searched in the file name (quote it for Hydra)
    val_pattern: Optional[str] = None  # file names that match are the validation split, e.g. '_jackson_'
    val_fraction: float = 0.1
    label_column: str = "label"
    audio_column: str = "audio"
    bad_audio: Literal["fail", "skip"] = "fail"

    def has_split(self, split: str) -> bool:
        return split == "train" or bool(self.val_pattern)

    def records(self, split: str = "train", log: Log = print) -> Iterator[tuple[str, dict]]:
        yield from self.matching(split, log)

    def train_records(self, log: Log) -> Iterator[tuple[str, dict]]:
        yield from self.matching("train", log)

    def matching(self, split: str, log: Log) -> Iterator[tuple[str, dict]]:
        folder, label = Path(self.path).expanduser(), re.compile(self.label_pattern)
        held_out = re.compile(self.val_pattern) if self.val_pattern else None
        checked, unlabelled, found = Checked(self.bad_audio, "dataset.path"), [], 0
        for file in sorted(p for p in folder.rglob("*") if p.is_file()):
            if held_out is not None and bool(held_out.search(file.name)) != (split == "val"):
                continue
            match = label.search(file.name)
            if match is None and file.suffix.lower() in AUDIO_SUFFIXES:
                unlabelled.append(file)
            elif checked.ok(file):
                found += 1
                name = match.group(1) if label.groups else match.group(0)
                yield str(file), {self.audio_column: str(file), self.label_column: name}
        checked.report(folder, log)
        if unlabelled:
            log(f"skipped {len(unlabelled)} file(s) whose name dataset.label_pattern '{self.label_pattern}' does not "
                f"match (first: {unlabelled[0].name})")
        if not found:
            which = f" matching dataset.val_pattern '{self.val_pattern}'" if split == "val" else ""
            raise PtcliError(f"no labelled WAV files{which} in '{folder}'", where="dataset.path",
                             fix="check dataset.path, dataset.label_pattern and dataset.val_pattern")

    def fingerprint(self, split: str = "train") -> str:
        return records.json_dumps({"source": "AudioFiles", "split": split, **self.train_fingerprint()})

    def train_fingerprint(self) -> dict:
        folder = Path(self.path).expanduser()
        return {"folder": str(folder), "stats": folder_stats(folder), "label": self.label_pattern,
                "val": self.val_pattern, "bad_audio": self.bad_audio}

    def describe(self, split: str = "train") -> str:
        if split == "val" and self.val_pattern:
            return f"{self.path} (names matching '{self.val_pattern}')"
        return self.train_description()

    def train_description(self) -> str:
        return f"{self.path}" + (f" (names not matching '{self.val_pattern}')" if self.val_pattern else "")

    def own_problems(self, check_files: bool) -> list[str]:
        problems = [f"missing required value 'dataset.{key}' (set it: dataset.{key}={example})"
                    for key, example in (("path", "<folder of WAV files>"), ("label_pattern", "\"'^(\\d+)_'\""))
                    if getattr(self, key) in ("???", "", None)]
        for key in ("label_pattern", "val_pattern"):
            value = getattr(self, key)
            if value not in ("???", "", None):
                try:
                    re.compile(value)
                except re.error as e:
                    problems.append(f"dataset.{key} '{value}' is not a regular expression: {e}")
        if check_files and self.path not in ("???", "", None) and not Path(self.path).expanduser().is_dir():
            problems.append(f"dataset.path: '{self.path}' is not a folder (give a folder of WAV files)")
        return problems


@dataclass(eq=False)
class AudioManifest(FileSource):
    """JSON Lines or CSV rows naming a WAV file (relative to the listing's folder), its label and/or transcript; each
    file's header is checked as its row is read."""

    audio_column: str = "audio"
    label_column: Optional[str] = "label"
    transcript_column: Optional[str] = None  # the text spoken (speech recognition), carried as 'transcript'
    bad_audio: Literal["fail", "skip"] = "fail"
    val_fraction: float = 0.1
    suffixes = (".jsonl", ".json", ".csv", ".tsv")

    def records(self, split: str = "train", log: Log = print) -> Iterator[tuple[str, dict]]:
        if split != "val":
            yield from self.train_records(log)
            return
        yield from self.resolved(super().records(split, log), log)

    def train_records(self, log: Log) -> Iterator[tuple[str, dict]]:
        yield from self.resolved(super().train_records(log), log)

    def resolved(self, rows, log: Log) -> Iterator[tuple[str, dict]]:
        """Rows with their audio path made absolute (relative to the listing file) and its header checked."""
        checked = Checked(self.bad_audio, "dataset.files")
        for where, record in rows:
            value = records.column(record, self.audio_column, "dataset.audio_column", where)
            if not isinstance(value, str) or not value.strip():
                raise PtcliError(f"the audio column '{self.audio_column}' holds {records._kind(value)}, not a file "
                                 "path", where=where, fix="give every row an audio path")
            path = Path(value).expanduser()
            if not path.is_absolute():
                path = Path(re.sub(r"(:\d+|\[\d+\])$", "", where)).parent / path
            if not path.is_file():
                raise PtcliError(f"the audio file '{value}' does not exist (looked for {path})", where=where,
                                 fix="fix the path; relative paths are relative to the file that lists them")
            checked.key = where
            if checked.ok(path):
                out = {**record, self.audio_column: str(path)}
                if self.transcript_column and self.transcript_column != "transcript":
                    out["transcript"] = records.column(record, self.transcript_column, "dataset.transcript_column",
                                                       where)
                yield where, out
        checked.report("the listing", log)


@dataclass(eq=False)
class Tones(Source):
    """Synthetic clips, no files needed: each class a musical note (a sine with its second harmonic, a random
    phase, loudness, length and slight detuning, in noise), seeded; a fifth held out."""

    classes: list[str] = field(default_factory=lambda: ["A3", "E4", "A4", "E5"])  # note names: A4 is 440 Hz
    per_class: int = 60
    rate: int = 8000
    seed: int = 0
    val_fraction: float = 0.2
    label_column: str = "label"
    audio_column: str = "audio"

    def train_records(self, log: Log) -> Iterator[tuple[str, dict]]:
        import numpy as np

        rng = np.random.default_rng(self.seed)
        for i in range(self.per_class):
            for name in self.classes:
                wave = tone(name, self.rate, rng, 0.3, 0.8)
                wave = wave + rng.normal(0, 0.05, len(wave))
                yield f"tones[{name}:{i}]", {self.audio_column: {"array": wave.astype(np.float32),
                                                                 "sampling_rate": self.rate},
                                             self.label_column: name}

    def train_fingerprint(self) -> dict:
        return {"tones": list(self.classes), "n": self.per_class, "rate": self.rate, "seed": self.seed}

    def train_description(self) -> str:
        return f"synthetic tones ({', '.join(self.classes)})"

    def own_problems(self, check_files: bool) -> list[str]:
        problems = []
        for name in self.classes:
            try:
                note_hz(name)
            except ValueError as e:
                problems.append(f"dataset.classes: {e}")
        if len(self.classes) < 2:
            problems.append("dataset.classes needs at least two notes")
        return problems


def tone(name: str, rate: int, rng, shortest: float, longest: float):
    """A note (a sine with its second harmonic, slightly detuned, a random phase, loudness and length between
    ``shortest`` and ``longest`` seconds), drawn from ``rng`` in that order."""
    import numpy as np

    hz = note_hz(name) * 2 ** (rng.uniform(-0.3, 0.3) / 12)
    t = np.arange(int(rate * rng.uniform(shortest, longest))) / rate
    phase = rng.uniform(0, 2 * np.pi)
    wave = np.sin(2 * np.pi * hz * t + phase) + 0.3 * np.sin(4 * np.pi * hz * t + phase)
    return rng.uniform(0.2, 0.8) * wave / 1.3


@dataclass(eq=False)
class ToneWords(Source):
    """Synthetic speech for CTC, no files needed: each letter is a note (``letters`` maps them: a is A3, c C4,
    ...), a word a few notes in a row, words apart by a pause, in noise; the transcript spells the words ("ace
    ga"). Seeded; a fifth held out."""

    letters: dict = field(default_factory=lambda: {"a": "A3", "c": "C4", "e": "E4", "g": "G4"})
    clips: int = 240
    max_words: int = 2
    max_letters: int = 3
    rate: int = 8000
    seed: int = 0
    val_fraction: float = 0.2
    audio_column: str = "audio"
    transcript_column: str = "transcript"

    def train_records(self, log: Log) -> Iterator[tuple[str, dict]]:
        import numpy as np

        rng = np.random.default_rng(self.seed)
        letters = sorted(self.letters)
        for i in range(self.clips):
            words = ["".join(rng.choice(letters, int(rng.integers(1, self.max_letters + 1))))
                     for _ in range(int(rng.integers(1, self.max_words + 1)))]
            pieces = [np.zeros(int(self.rate * rng.uniform(0.02, 0.1)))]
            for w, word in enumerate(words):
                if w:
                    pieces.append(np.zeros(int(self.rate * rng.uniform(0.12, 0.2))))
                for letter in word:
                    pieces += [tone(self.letters[letter], self.rate, rng, 0.08, 0.14),
                               np.zeros(int(self.rate * 0.02))]
            wave = np.concatenate(pieces)
            wave = wave + rng.normal(0, 0.03, len(wave))
            yield f"tone-words[{i}]", {self.audio_column: {"array": wave.astype(np.float32),
                                                           "sampling_rate": self.rate},
                                       "transcript": " ".join(words)}

    def train_fingerprint(self) -> dict:
        return {"tone-words": dict(self.letters), "n": self.clips, "words": self.max_words,
                "letters": self.max_letters, "rate": self.rate, "seed": self.seed}

    def train_description(self) -> str:
        return f"synthetic tone words ({', '.join(f'{k}={v}' for k, v in sorted(self.letters.items()))})"

    def own_problems(self, check_files: bool) -> list[str]:
        problems = []
        for letter, name in self.letters.items():
            if len(str(letter)) != 1 or str(letter) in " |":
                problems.append(f"dataset.letters: '{letter}' is not one character (each key spells one note)")
            try:
                note_hz(name)
            except ValueError as e:
                problems.append(f"dataset.letters: {e}")
        if min(self.clips, self.max_words, self.max_letters) < 1:
            problems.append("dataset.clips, dataset.max_words and dataset.max_letters must be at least 1")
        return problems


def note_hz(name: str) -> float:
    """A note's frequency: 'A4' is 440 Hz, 'C#5' 554.37 Hz (equal temperament)."""
    match = re.fullmatch(r"([A-G])(#|b)?(-?\d)", str(name))
    if match is None:
        raise ValueError(f"'{name}' is not a note name (A4, C#5, Eb3)")
    step = {"C": -9, "D": -7, "E": -5, "F": -4, "G": -2, "A": 0, "B": 2}[match.group(1)]
    step += {"#": 1, "b": -1, None: 0}[match.group(2)]
    return 440.0 * 2 ** ((step + 12 * (int(match.group(3)) - 4)) / 12)
