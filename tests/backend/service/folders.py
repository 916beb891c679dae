"""Where the server keeps a job: ``workdir/<job id>.<owner prefix>`` (:func:`backend.service.server.job_key`)."""

from __future__ import annotations

from pathlib import Path


def job_folder(workdir: Path, job: str) -> Path:
    """The folder of the job with client id ``job`` (the only one: tests use distinct ids), or ``workdir/job`` when
    there is none."""
    found = [p for p in Path(workdir).iterdir() if p.name.split(".")[0] == job] if Path(workdir).is_dir() else []
    assert len(found) <= 1, found
    return found[0] if found else Path(workdir) / job
