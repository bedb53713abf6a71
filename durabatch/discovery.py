"""Find the documents under the paths a user gave, as a stream.

Folders are walked recursively in sorted order (so a rediscovery after a
crash finds the same documents in the same order), one directory at a time,
so memory stays flat however many files there are. Hidden files and folders
(names starting with a dot) are left out of folder walks, and so are the
database and its files; a file named explicitly is always taken.

Only links are resolved, one by one: any other file's source is its folder's
real path and its name. Symbolic links to folders are not followed (a link back
to a parent would walk forever). A link that leads nowhere - to a file that is
gone, or round a loop of links - is taken as a document, so that it ends
``failed`` with a reason a person can see instead of vanishing from the run.

A path that is not valid UTF-8 (a name in Latin-1, say) is found like any other
and stored written out (see ``durabatch.names``), so that it ends ``failed``
too, saying to rename it, instead of stopping the run. A path given written out
(a run's stored inputs, on resume) is walked from the real path it stands for.
"""

from __future__ import annotations

import fnmatch
import os
import stat
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from durabatch import names
from durabatch.errors import UsageError
from durabatch.store.records import NewDocument

PASSED = 256  # files passed over between two Nones of ``walk``


def check_paths(paths: Sequence[str]) -> None:
    missing = [names.storable(p) for p in paths if not os.path.exists(p)]
    if missing:
        raise UsageError(f"no such file or folder: {', '.join(missing)}; check the path")
    for path in paths:
        if os.path.isdir(path):
            _check_listable(path)


def _check_listable(folder: str) -> None:
    try:
        with os.scandir(folder):
            _enter(folder)
    except OSError as exc:
        raise UsageError(
            f"cannot list the folder {names.storable(folder)} ({exc.strerror}); "
            "fix its permissions so that you can read and enter it, then run again"
        ) from exc


def discover(
    paths: Iterable[str],
    base: Path,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    ignore: Sequence[Path] = (),
) -> Iterator[NewDocument]:
    """Yield every document under ``paths`` (relative to ``base``) that passes the globs."""
    return (doc for doc in walk(paths, base, include, exclude, ignore) if doc is not None)


def walk(
    paths: Iterable[str],
    base: Path,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    ignore: Sequence[Path] = (),
) -> Iterator[NewDocument | None]:
    """``discover``, with a None after every ``PASSED`` files passed over (ignored, or
    not matching the globs): a caller that does other work between documents gets
    control back during a long stretch of files it does not want."""
    ignored = [str(p.resolve()) for p in ignore]
    passed = 0
    for given in paths:
        root = _real(base / given)
        if root.is_dir():
            files = _walk(str(root), _source(root), base)
        elif root.exists():
            files = iter([(_shown(root, base), _source(root), os.stat(root).st_size)])
        else:
            files = iter([])
        for shown, source, size in files:
            unlisted = size is None  # any file in it might have been wanted: not --include
            if not any(source == i or source.startswith(i + os.sep) for i in ignored) and (
                _wanted(shown, () if unlisted else include, exclude)
            ):
                yield NewDocument(
                    path=names.storable(shown), source=names.storable(source), size=size or 0
                )
                continue
            passed += 1
            if passed % PASSED == 0:
                yield None


def _real(given: Path) -> Path:
    """The path given, or the real one it stands for when written out by ``names``."""
    if given.exists():
        return given
    found = names.undo(given)
    return given if found is None else found[0]


def _source(path: Path) -> str:
    """The absolute path with links resolved; for a link that leads nowhere, the link."""
    if os.path.exists(path):
        try:
            return str(path.resolve())
        except (OSError, RuntimeError):  # a loop of links made meanwhile (RuntimeError < 3.13)
            pass
    return str(path.parent.resolve() / path.name)


def _shown(path: Path, base: Path) -> str:
    """The path as the user sees it: relative to where the run started, when inside it."""
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return path.as_posix()


def _walk(folder: str, real: str, base: Path) -> Iterator[tuple[str, str, int | None]]:
    """Each file's path as shown (``_shown``), its source (``_source``) and its size;
    ``real``: the folder's own path with links resolved. A folder that cannot be listed
    comes out itself, with no size, so that extract fails it: its files were not seen.

    Only links are resolved, one by one (resolving costs a system call for each part of
    the path): any other entry's source is ``real``/name, and its path as shown is its
    folder's and its name. An entry replaced by a link while the walk runs keeps the
    path it was listed under."""
    shown = _shown(Path(folder), base)  # once a folder: the base may be inside it
    try:
        listed, folders, links = _listing(folder)
    except FileNotFoundError:  # vanished while we walked, like a file: it was never there
        return
    except OSError:
        yield shown, real, None
        return
    prefix = "" if shown == "." else shown if shown.endswith("/") else f"{shown}/"
    for name in listed:
        path = os.path.join(folder, name)
        if name in folders:  # a folder, not a link to one: its real path is real/name
            yield from _walk(path, os.path.join(real, name), base)
            continue
        try:
            found = os.stat(path)  # through a link, as the parsers will read it
        except OSError:  # vanished or unreadable while we walked: it was never there ...
            if os.path.islink(path):  # ... unless a link leads nowhere, or round a loop
                yield prefix + name, _source(Path(path)), 0  # extract says which
            continue
        if stat.S_ISREG(found.st_mode):
            source = _source(Path(path)) if name in links else os.path.join(real, name)
            yield prefix + name, source, found.st_size


def _listing(folder: str) -> tuple[list[str], set[str], set[str]]:
    """A folder's visible names, sorted; which of them are folders (links are not); and
    which are links (or could not be told: they are resolved the slow way).

    Names only: a DirEntry keeps its stat once asked, and the entries of a folder of
    100,000 files, held until the walk leaves it, cost 70 MB; their names cost 7."""
    _enter(folder)
    listed: list[str] = []
    folders: set[str] = set()
    links: set[str] = set()
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                continue
            listed.append(entry.name)
            try:
                if entry.is_dir(follow_symlinks=False):
                    folders.add(entry.name)
                elif entry.is_symlink():
                    links.add(entry.name)
            except OSError:
                links.add(entry.name)
    listed.sort()
    return listed, folders, links


def _enter(folder: str | Path) -> None:
    """Raise OSError unless the files in ``folder`` can be seen: it must be searchable
    (its "." is reached through it), not only readable, or every file's stat fails."""
    os.stat(os.path.join(folder, os.curdir))


def _wanted(path: str, include: Sequence[str], exclude: Sequence[str]) -> bool:
    name = path.rsplit("/", 1)[-1]

    def matches(pattern: str) -> bool:
        return fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(name, pattern)

    if include and not any(matches(p) for p in include):
        return False
    return not any(matches(p) for p in exclude)
