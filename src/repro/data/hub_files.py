"""One file of a hub dataset repo: from a local copy laid out as on the hub, or through the hub cache."""

from __future__ import annotations

from pathlib import Path


def hub_dataset_file(repo_id: str, filename: str, revision: str | None = None,
                     local_root: str | Path | None = None) -> str | Path:
    """The path of ``filename`` in the dataset repo ``repo_id``.

    With ``local_root`` (``simcse.data.hub_local_root``) the repo's files are read from
    ``<local_root>/<repo_id>/<filename>``; without it the file is fetched with ``hf_hub_download``, so the
    hub cache and ``HF_HUB_OFFLINE`` apply.

    Raises:
        FileNotFoundError: naming the missing path, the repo file and the key ``simcse.data.hub_local_root``.
    """
    if local_root is not None:
        path = Path(local_root) / repo_id / filename
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no local copy of {repo_id}/{filename} (key 'simcse.data.hub_local_root')")
        return path
    from huggingface_hub import hf_hub_download

    return hf_hub_download(repo_id=repo_id, filename=filename, repo_type="dataset", revision=revision)
