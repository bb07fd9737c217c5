"""One clear error when a collective fails because another process of the job died, hung or became unreachable."""

from __future__ import annotations

import re

from ptcli.training.parallel import Dist


def peer_failure(error: BaseException, dist_info: Dist, run_dir):
    """A ``RunFailure`` for a collective that failed because another process of the job died, hung past
    ``device.timeout_s`` or lost its connection (None for any other error): names the last checkpoint and how to
    resume, instead of gloo's or NCCL's traceback."""
    if not dist_info.enabled:
        return None
    import torch.distributed as tdist

    from ptcli.errors import RunFailure

    text = str(error)
    markers = ("Connection closed by peer", "Connection reset by peer", "Timed out", "timed out", "Broken pipe",
               "NCCL", "Gloo", "gloo", "ProcessGroup")
    if not isinstance(error, tdist.DistError) and not any(m in text for m in markers):
        return None
    from ptcli.training.checkpoint import CheckpointManager

    last = CheckpointManager(run_dir, 0).latest()
    # "[.../gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:4018. This is typically ..."
    first = re.sub(r"^\[[^\]]*\]\s*", "", text.strip().splitlines()[0]) if text.strip() else ""
    reason = (first.split(". ")[0].rstrip(".")[:160]) or type(error).__name__
    kept = f"the last checkpoint, {last}, is intact" if last else "no checkpoint had been written yet"
    return RunFailure(f"process {dist_info.rank} of {dist_info.world}: another process of this job died, hung or "
                      f"became unreachable ({reason}); {kept}",
                      where=str(run_dir),
                      fix="Look for the first failing process's error (or its kill/OOM message) in the job's "
                          "log, then resume with train.resume=auto hydra.run.dir=" + str(run_dir)
                          + " (any number of processes)")
