"""Label maps discovered from training data, and the checks that keep evaluation labels honest."""

from __future__ import annotations

from ptcli.errors import PtcliError


def label_key(value) -> str:
    """Labels compare as text: 1 (JSON) and "1" (CSV) are the same label; floats like 1.0 become "1"."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


class LabelMap:
    """Label name <-> id. Integer-like labels sort numerically (so "0", "1", "10"), others alphabetically."""

    def __init__(self, names: list[str]):
        self.names = list(names)
        self.index = {n: i for i, n in enumerate(self.names)}

    @classmethod
    def discover(cls, pairs, column: str = "label", key: str = "dataset.label_column") -> LabelMap:
        from ptcli.data.records import column as get

        seen: set[str] = set()
        for record, where in pairs:
            value = get(record, column, key, where) if column else record
            for v in value if isinstance(value, list) else [value]:
                if v is None or label_key(v) == "":
                    raise PtcliError("a training row has an empty label", where=where,
                                     fix="give every row a label, or remove the row")
                seen.add(label_key(v))
        if not seen:
            raise PtcliError("no labels found in the training data", fix="check dataset.label_column")
        numbers, names = sorted(s for s in seen if _is_int(s)), sorted(s for s in seen if not _is_int(s))
        if numbers and names:  # 0/1 beside neg/pos would silently become four classes
            raise PtcliError(f"the labels in column '{column}' mix numbers ({', '.join(numbers[:5])}) and names "
                             f"({', '.join(names[:5])})", where=key,
                             fix="make them one kind: map the numbers to names (or the names to numbers) in the data")
        if len(seen) < 2:
            raise PtcliError(f"the training data has a single label ('{next(iter(seen))}') in column '{column}'; "
                             "classification needs at least two", where=key,
                             fix="check dataset.label_column and that the training files hold every class (for "
                                 "numeric targets, set objective.num_labels=1: regression)")
        return cls(sorted(seen, key=int) if numbers else names)

    @classmethod
    def from_config(cls, id2label: dict) -> LabelMap:
        return cls([id2label[i] for i in sorted(id2label, key=int)])

    def __len__(self) -> int:
        return len(self.names)

    def id_of(self, value, where: str) -> int:
        key = label_key(value)
        if key not in self.index:
            shown = ", ".join(self.names[:20]) + (" ..." if len(self.names) > 20 else "")
            raise PtcliError(f"label '{key}' was never seen in training; the training labels are: {shown}",
                             where=where, fix="fix the label, or add examples of it to the training data")
        return self.index[key]

    def check_count(self, num_labels: int | None, column: str) -> None:
        if num_labels is not None and num_labels != len(self):
            raise PtcliError(f"objective.num_labels={num_labels} but the training data has {len(self)} "
                             f"labels in column '{column}': {self.describe()}",
                             fix=f"set objective.num_labels={len(self)} or null (discover from the data)")

    def describe(self) -> str:
        shown = ", ".join(self.names[:12]) + (f" ... ({len(self)} in all)" if len(self) > 12 else "")
        return f"{len(self)} ({shown})"

    def id2label(self) -> dict:
        return dict(enumerate(self.names))

    def label2id(self) -> dict:
        return dict(self.index)


def _is_int(text: str) -> bool:
    try:
        int(text)
        return True
    except ValueError:
        return False


class OneLabelEach:
    """For objectives with one label per example in ``self.label_column`` (images, audio): the label map learned
    from the training rows, restored from a trained model's config, and written into the model's head."""

    labels: LabelMap | None = None

    def learn(self, train_rows, log) -> None:
        self.labels = LabelMap.discover(((r, w) for w, r in train_rows), self.label_column)
        log(f"labels: {self.labels.describe()}")

    def restore(self, model_config) -> None:
        self.labels = LabelMap.from_config(model_config.id2label)

    def head_kwargs(self) -> dict:
        return {"num_labels": len(self.labels), "id2label": self.labels.id2label(),
                "label2id": self.labels.label2id()}
