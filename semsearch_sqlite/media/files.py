"""Finding image files in a folder, their labels (folder name or a CSV), and the one
file-hash helper of the package."""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from semsearch_sqlite.errors import ImageError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})


@dataclass
class DiscoveryResult:
    """Image files found under a root, the directories that could not be read, and the
    symlinks left out because they lead outside the root."""

    files: list[Path] = field(default_factory=list)
    problems: list[tuple[Path, str]] = field(default_factory=list)
    outside_links: list[Path] = field(default_factory=list)


OUTSIDE_LINK = "symlink to {target} leads outside the folder (add --follow-links to include it)"


def discover(root: str | Path, *, follow_links: bool = False) -> DiscoveryResult:
    """Find image files under ``root``, recursively.

    Hidden files and folders (leading '.') are skipped. Symlinks (to folders or files)
    that lead outside ``root`` are left out and listed in ``outside_links``, unless
    ``follow_links``; a folder is never walked twice, however many links lead to it, so
    symlink loops end. Unreadable folders are reported, not fatal.

    Args:
        root: the folder to search.
        follow_links: also follow symlinks that lead outside ``root``.

    Returns:
        The files sorted by their path relative to ``root``, ``(path, reason)`` problems
        and the links left out.

    Raises:
        ImageError: ``root`` is not a readable folder.
    """
    root = Path(root)
    if not root.is_dir():
        reason = "no such folder" if not root.exists() else "not a folder"
        raise ImageError(str(root), f"{reason}; pass the folder that holds the images")
    result = DiscoveryResult()
    real_root = root.resolve()
    seen: set[Path] = set()

    def outside(path: Path) -> bool:
        if follow_links:
            return False
        target = path.resolve()
        if target == real_root or target.is_relative_to(real_root):
            return False
        result.outside_links.append(path)
        return True

    # Real folders first, symlinked ones after, each in name order: a folder reachable
    # both ways is listed under its real path, and the walk is the same on every run.
    stack: list[Path] = [root]
    links: list[Path] = []
    while stack or links:
        folder = stack.pop() if stack else links.pop(0)
        real = folder.resolve()
        if real in seen:
            continue
        seen.add(real)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name, reverse=True)
        except OSError as e:
            result.problems.append((folder, os_reason(e)))
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            try:
                if entry.is_dir():  # follows symlinks; ``seen`` stops loops
                    if not entry.is_symlink():
                        stack.append(path)
                    elif not outside(path):
                        links.append(path)
                elif path.suffix.lower() in IMAGE_EXTENSIONS:
                    if entry.is_file():
                        if not (entry.is_symlink() and outside(path)):
                            result.files.append(path)
                    elif entry.is_symlink() and not path.exists():
                        result.problems.append((path, "broken symlink"))
            except OSError as e:
                result.problems.append((path, os_reason(e)))
        links.sort()
    # every file is under root: its path string sorts as its relative path does
    result.files.sort(key=lambda p: os.fspath(p).replace(os.sep, "/"))
    result.outside_links.sort()
    return result


def normalise_label(text: str) -> str:
    """``"Dining_Table"`` -> ``"dining table"``: underscores and hyphens to spaces, lower-case."""
    return " ".join(re.sub(r"[_\-]+", " ", text).split()).lower()


def label_for(path: str | Path, root: str | Path) -> str | None:
    """The label of an image from its folder: ``dining_table/x.jpg`` -> ``"dining table"``.

    Nested folders give the immediate parent's name; files directly in ``root`` give None.
    """
    rel = Path(os.path.relpath(Path(path), Path(root)))
    if len(rel.parts) < 2:
        return None
    return normalise_label(rel.parent.name) or None


def read_labels_csv(path: str | Path) -> dict[str, str]:
    """Read a ``path,label`` CSV (header optional) into ``{path: label}``.

    Relative paths are kept as posix paths relative to the images root; absolute paths
    are resolved. Labels are normalised like folder names.

    Raises:
        ImageError: the file can't be read, or a row is not ``path,label`` (names the line).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ImageError(str(path), "labels file is not UTF-8 text; save it as UTF-8 CSV") from None
    except OSError as e:
        raise ImageError(str(path), f"cannot read labels file ({os_reason(e)})") from None
    labels: dict[str, str] = {}
    first_line: dict[str, int] = {}
    reader = csv.reader(io.StringIO(text))
    for row in reader:
        lineno = reader.line_num
        cells = [c.strip() for c in row]
        if not any(cells):
            continue
        if lineno == 1 and [c.lower() for c in cells] == ["path", "label"]:
            continue
        if len(cells) != 2 or not cells[0] or not normalise_label(cells[1]):
            raise ImageError(str(path), f"line {lineno}: expected 'path,label', got {','.join(row)!r}")
        key = _label_key(cells[0])
        label = normalise_label(cells[1])
        if key in labels and labels[key] != label:
            raise ImageError(
                str(path), f"line {lineno}: {cells[0]} is already labelled {labels[key]!r} on line {first_line[key]}"
            )
        labels[key] = label
        first_line.setdefault(key, lineno)
    return labels


def _label_key(raw: str) -> str:
    if os.path.isabs(raw):
        return str(Path(raw).resolve())
    posix = PurePosixPath(raw.replace("\\", "/")).as_posix()
    return posix[2:] if posix.startswith("./") else posix


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def os_reason(e: OSError) -> str:
    if isinstance(e, PermissionError):
        return "permission denied"
    if isinstance(e, FileNotFoundError):
        return "no such file"
    if isinstance(e, IsADirectoryError):
        return "is a folder, not an image file"
    return f"cannot read ({e.strerror or e})"
