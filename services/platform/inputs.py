"""A job's input files, as every platform reads them from its input artifact."""

from __future__ import annotations

from services.artifacts.store import ArtifactError, ArtifactStore
from services.simulators.errors import BadInput


async def task_input_files(artifacts: ArtifactStore, input_ref: str) -> dict[str, str]:
    """The input files (name -> text) stored by the API for a job.

    Raises:
        BadInput: the artifact is unreadable, or has no files (an editor project that
            was not converted), or its files are not text.
    """
    try:
        data = await artifacts.aget_json(input_ref)
    except (ArtifactError, ValueError) as exc:
        raise BadInput(f"input artifact {input_ref} cannot be read: {exc}") from exc
    files = data.get("input_files") if isinstance(data, dict) else None
    if not isinstance(files, dict) or not files:
        kind = data.get("input_type") if isinstance(data, dict) else None
        raise BadInput(f"input of type {kind!r} has no input files (editor projects are "
                       "converted when submitted; this job was submitted before that)")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        raise BadInput("input files must map names to text")
    return files
