"""Reading FSDP's sharded checkpoints (torch.distributed.checkpoint) without running code a file may carry.

torch.distributed.checkpoint pickles its ``.metadata`` and any non-tensor values (optimizer settings) and reads them
back with ``pickle.load`` / ``torch.load(weights_only=False)``: a crafted checkpoint runs what it likes. ptcli reads
``.metadata`` with an unpickler that builds only the few classes that file is made of, and the other values with
``torch.load(weights_only=True)``; the tensors were already read that way.
"""

from __future__ import annotations

import pickle

from ptcli.errors import PtcliError

# What a .metadata file is made of (found by reading real ones): the checkpoint's dataclasses, sizes, dtypes, paths.
ALLOWED = {
    ("torch.distributed.checkpoint.metadata", name) for name in (
        "Metadata", "MetadataIndex", "StorageMeta", "TensorProperties", "TensorStorageMetadata",
        "BytesStorageMetadata", "ChunkStorageMetadata", "_MEM_FORMAT_ENCODING")
} | {("torch.distributed.checkpoint.filesystem", "_StorageInfo"), ("torch", "Size"),
      ("torch.serialization", "_get_layout"), ("pathlib", "PosixPath"), ("pathlib", "PurePosixPath"),
      ("pathlib", "WindowsPath"), ("pathlib", "PureWindowsPath"), ("collections", "OrderedDict")}


class Refused(pickle.UnpicklingError):
    """The file names a global that no checkpoint holds."""


class RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        import torch

        if (module, name) in ALLOWED or (module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)):
            return super().find_class(module, name)
        raise Refused(f"{module}.{name}")


def safe_reader(folder):
    """A FileSystemReader whose metadata is read with ``RestrictedUnpickler``."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import StorageMeta

    class SafeReader(FileSystemReader):
        def read_metadata(self, *args, **kwargs):
            locate = getattr(self, "_get_metadata_path", None)
            path = locate(kwargs.get("rank")) if locate else self.fs.concat_path(self.path, ".metadata")
            with self.fs.create_stream(path, "rb") as stream:
                metadata = load_metadata(stream, path)
            if getattr(metadata, "storage_meta", None) is None:
                metadata.storage_meta = StorageMeta()
            metadata.storage_meta.load_id = self.load_id
            return metadata

    return SafeReader(str(folder))


def load_metadata(stream, where):
    try:
        return RestrictedUnpickler(stream).load()
    except Refused as e:
        raise PtcliError(f"the sharded checkpoint's metadata refers to '{e}', which no checkpoint holds: it was not "
                         "written by ptcli or was tampered with, and it is not loaded (it could run code)",
                         where=str(where), fix="Use a checkpoint you trust, or the run's model/ folder") from None
    except (pickle.UnpicklingError, EOFError, AttributeError, TypeError, ValueError) as e:
        raise PtcliError(f"the sharded checkpoint's metadata is damaged ({type(e).__name__}: {e})", where=str(where),
                         fix="Resume from an earlier checkpoint (train.resume=<checkpoints/step-N>)") from None


def safe_planner():
    """A DefaultLoadPlanner that reads non-tensor values with ``torch.load(weights_only=True)``."""
    import torch
    from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner

    class SafePlanner(DefaultLoadPlanner):
        def load_bytes(self, read_item, value) -> None:
            try:
                loaded = torch.load(value, weights_only=True)
            except pickle.UnpicklingError as e:
                raise PtcliError(f"a value in the sharded checkpoint ({read_item.dest_index.fqn}) is not plain data: "
                                 f"{str(e).splitlines()[0]}; it is not loaded (it could run code)",
                                 fix="Use a checkpoint you trust, or the run's model/ folder") from None
            if self.flatten_state_dict:  # as DefaultLoadPlanner.load_bytes does
                from torch.distributed.checkpoint.default_planner import set_element

                set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], loaded)
            else:
                self.state_dict[read_item.dest_index.fqn] = loaded

    return SafePlanner()


def load(state: dict, folder) -> None:
    """``torch.distributed.checkpoint.load`` of ``state`` from ``folder``, safely."""
    import warnings
    from pathlib import Path

    import torch.distributed.checkpoint as dcp

    metadata = Path(folder) / ".metadata"
    if not metadata.is_file():
        raise PtcliError(f"the sharded checkpoint in {folder} has no .metadata",
                         fix="Resume from an earlier checkpoint")
    with open(metadata, "rb") as stream:  # checked here first: torch.distributed.checkpoint would hide our error
        load_metadata(stream, metadata)
    with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
        warnings.filterwarnings("ignore", message=".*load in a single process.*")
        try:
            dcp.load(state, storage_reader=safe_reader(folder), planner=safe_planner())
        except dcp.api.CheckpointException as e:  # each rank's error, wrapped: ours is one of them
            failures = [f[0] if isinstance(f, tuple) else f for f in (getattr(e, "failures", {}) or {}).values()]
            ours = next((f for f in failures if isinstance(f, PtcliError)), None)
            if ours is not None:
                raise ours from None
            first = failures[0] if failures else e
            raise PtcliError(f"the sharded checkpoint in {folder} cannot be read: {type(first).__name__}: "
                             f"{str(first).strip().splitlines()[0] if str(first).strip() else ''}",
                             fix="Resume from an earlier checkpoint, or the run's model/ folder") from None
