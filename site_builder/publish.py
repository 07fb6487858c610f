"""Writes files into `public/` so nginx never serves half a file: each one goes to a temp
file in the same directory and is `os.replace`d into place; a file whose bytes did not
change is not rewritten (its ETag and mtime stay, browsers revalidate cheaply)."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path


class Publisher:
    """Atomic, change-only writes under one root; remembers what it wrote."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.digests: dict[str, str] = {}
        self.written = 0
        self.unchanged = 0

    def path(self, relative: str) -> Path:
        target = (self.root / relative).resolve()
        if not target.is_relative_to(self.root.resolve()):
            raise ValueError(f"refusing to write outside {self.root}: {relative}")
        return target

    def write(self, relative: str, data: bytes | str) -> bool:
        """Writes the file unless it already holds these bytes; returns whether it wrote."""
        raw = data.encode() if isinstance(data, str) else data
        digest = hashlib.sha256(raw).hexdigest()
        target = self.path(relative)
        if self.digests.get(relative) == digest and target.exists():
            self.unchanged += 1
            return False
        known = relative in self.digests
        if not known and target.exists() and self._digest(target) == digest:
            self.digests[relative] = digest
            self.unchanged += 1
            return False
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(raw)
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self.digests[relative] = digest
        self.written += 1
        return True

    @staticmethod
    def _digest(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    def copy_tree(self, source: Path, relative: str) -> int:
        """Publishes every file under `source` at `relative`; returns how many changed."""
        changed = 0
        for path in sorted(source.rglob("*")):
            if path.is_file() and not path.name.startswith("."):
                changed += self.write(f"{relative}/{path.relative_to(source)}", path.read_bytes())
        return changed

    def remove_stale_temps(self) -> None:
        """Deletes temp files a killed build left behind."""
        if self.root.exists():
            for tmp in self.root.rglob(".tmp-*"):
                tmp.unlink(missing_ok=True)

    def clear(self) -> None:
        """Empties the root (for tests and `--clean`)."""
        if self.root.exists():
            shutil.rmtree(self.root)
        self.digests.clear()
