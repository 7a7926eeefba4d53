"""The one folder the file tools may touch.

A path from a model is untrusted: absolute paths, ``..`` segments, drive
letters and symlinks that lead outside are refused before any file is opened.
The check resolves the real path (following every symlink) and requires it to
stay under the workspace's real path, so a link planted inside cannot leak out.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath

from ..errors import InputError

__all__ = ["Workspace"]


class Workspace:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def ensure(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        return self.root.resolve()

    def resolve(self, relative: str) -> Path:
        """The real path of ``relative`` inside the workspace, or InputError."""
        text = (relative or "").strip()
        if not text:
            raise InputError("no path given", hint="name a file inside the workspace, e.g. notes.txt")
        if "\x00" in text:
            raise InputError("the path contains a NUL byte", hint="name a plain file inside the workspace")
        if PurePosixPath(text).is_absolute() or PureWindowsPath(text).is_absolute() or PureWindowsPath(text).drive:
            raise InputError(
                f"absolute path {text!r} refused", hint="give a path relative to the workspace, e.g. notes.txt"
            )
        if ".." in PurePosixPath(text.replace("\\", "/")).parts:
            raise InputError(f"path {text!r} leaves the workspace", hint="stay inside the workspace folder")
        root = self.ensure()
        candidate = root / text
        real = Path(os.path.realpath(candidate))
        if real != root and root not in real.parents:
            raise InputError(
                f"path {text!r} resolves outside the workspace (a symlink?)",
                hint="only files really inside the workspace can be used",
            )
        return real
