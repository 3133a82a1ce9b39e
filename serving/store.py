"""Content-addressed artefact store on a local directory.

Objects are addressed by the sha256 of their bytes, never by a user-supplied name:
a key is ``<kind>/<aa>/<sha256><suffix>``. Writing the same bytes twice is a no-op,
which keeps re-delivered jobs idempotent.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

_KEY = re.compile(r"^(images|masks|exports)/[0-9a-f]{2}/[0-9a-f]{64}(\.[a-z0-9]{1,8})?$")


class ArtefactStore:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def put(self, data: bytes, *, kind: str, suffix: str = "") -> str:
        digest = hashlib.sha256(data).hexdigest()
        key = f"{kind}/{digest[:2]}/{digest}{suffix}"
        if not _KEY.match(key):
            raise ValueError(f"invalid artefact kind or suffix: {kind!r}, {suffix!r}")
        path = self.root / key
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            # Write then rename, so a crash never leaves a half-written object under its key.
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        return key

    def path(self, key: str) -> Path:
        """The file for a key; keys that are not store keys (e.g. with ``../``) are refused."""
        if not _KEY.match(key):
            raise KeyError(f"not an artefact key: {key!r}")
        return self.root / key

    def get(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def exists(self, key: str) -> bool:
        try:
            return self.path(key).is_file()
        except KeyError:
            return False
