"""A feature store in a local folder: one file per key, written atomically."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from contract.store.base import StoreError, StoreFolderMissing, StoreUnavailable, validate_key

_TMP_SUFFIX = ".tmp"
# A full disk or a used-up quota: space may come back (a cleanup, a bigger volume), so the
# write is retried and `previewvec retry` re-runs it. EACCES, EROFS and the rest stay
# permanent: they need someone to change the folder.
_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


def _write_error(what: str, exc: OSError) -> StoreError:
    """The store error of a failed write (``what``: "cannot write KEY"): transient
    (:class:`StoreUnavailable`) for a full disk or quota, else permanent."""
    kind = StoreUnavailable if exc.errno in _NO_SPACE else StoreError
    return kind(f"{what}: {exc}")


class LocalStore:
    """Keys map to files below ``root``; writes go through temp file + fsync + rename.

    ``create=False`` (a reader, such as :func:`previewvec.open`): the folder is not created
    on opening, and reading from a folder that does not exist raises
    :class:`StoreFolderMissing`, so a mistyped path is an error, not an empty catalog left
    behind as a new folder. A write still creates the folders it needs."""

    def __init__(self, root: str | os.PathLike[str], *, create: bool = True) -> None:
        self.root = Path(root).expanduser().resolve()
        self._root = str(self.root)  # string joins: pathlib costs more than a small read
        self._reader = not create
        if not create:
            if self.root.exists() and not self.root.is_dir():
                raise self._missing()
            return
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _write_error(f"cannot create store folder {self.root}", exc) from exc

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    def check(self) -> None:
        """Opened to read only: :class:`StoreFolderMissing` if the folder is not there.
        (Otherwise nothing to probe: the folder was created when the store opened.)"""
        if self._reader and not self.root.is_dir():
            raise self._missing()

    def _missing(self) -> StoreFolderMissing:
        what = "is not a folder" if self.root.exists() else "does not exist"
        return StoreFolderMissing(f"no feature store at {self.root}: the folder {what} "
                                  "(PREVIEWVEC_STORE)")

    def _path(self, key: str) -> Path:
        return self.root / validate_key(key)

    def exists(self, key: str) -> bool:
        """Whether a file is stored under ``key``."""
        return self._path(key).is_file()

    def get(self, key: str) -> bytes:
        """The file's bytes; ``FileNotFoundError`` if missing."""
        path = os.path.join(self._root, validate_key(key))
        try:
            with open(path, "rb") as fh:
                return fh.read()
        except FileNotFoundError:
            self.check()  # the whole store missing is not one missing key
            raise FileNotFoundError(f"no such key: {key}") from None
        except OSError as exc:
            raise StoreError(f"cannot read {key}: {exc}") from exc

    def put(self, key: str, data: bytes) -> None:
        """Write atomically: a temp file in the same folder, fsync, ``os.replace``.

        Same folder so the rename never crosses filesystems (which would not be atomic);
        concurrent writers of one key each rename a complete file, the last one wins. A
        full disk (ENOSPC, EDQUOT) is :class:`StoreUnavailable` (retried), any other
        failure :class:`StoreError`; either way no temp file is left behind.
        """
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_TMP_SUFFIX, dir=path.parent)
        except OSError as exc:
            raise _write_error(f"cannot write {key}", exc) from exc
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o644)  # mkstemp creates 0600; stored features are not secret
            os.replace(tmp, path)
        except BaseException as exc:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            if isinstance(exc, OSError):
                raise _write_error(f"cannot write {key}", exc) from exc
            raise
        self._fsync_dir(path.parent)

    @staticmethod
    def _fsync_dir(folder: Path) -> None:
        # Makes the rename itself durable across a crash; best effort (not all FSs allow it).
        try:
            dir_fd = os.open(folder, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(dir_fd)
        except OSError:
            pass
        finally:
            os.close(dir_fd)

    def delete(self, key: str) -> None:
        """Remove the file; a missing key is fine."""
        try:
            self._path(key).unlink(missing_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot delete {key}: {exc}") from exc

    def iter_keys(self, prefix: str = "") -> Iterator[str]:
        """Keys starting with ``prefix`` in ascending order, like S3's listing.

        Walks lazily from the deepest folder the prefix names. Entries are sorted with a
        trailing "/" on folders so that depth-first order equals full-key byte order
        (``a-b`` sorts before ``a/x`` because "-" < "/").
        """
        self.check()
        folder, _, _ = prefix.rpartition("/")
        start = self.root / folder if folder else self.root
        if folder and any(p in ("", ".", "..") for p in folder.split("/")):
            return
        base = f"{folder}/" if folder else ""
        yield from self._walk(start, base, prefix, frozenset())

    def _walk(self, folder: Path, base: str, prefix: str,
              above: frozenset[str]) -> Iterator[str]:
        # Symlinked folders are followed (a shard moved to another disk and linked back),
        # except one leading back to a folder above: a loop. ``above``: their real paths.
        real = os.path.realpath(folder)
        if real in above:
            return
        above = above | {real}
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            raise StoreError(f"cannot list {base or '/'}: {exc}") from exc
        named = []
        for entry in entries:
            if entry.name.startswith("."):  # temp files and anything hidden
                continue
            try:
                is_dir = entry.is_dir()  # follows a symlink; a dangling one is a key
            except OSError:
                is_dir = False
            named.append((entry.name + "/" if is_dir else entry.name, entry, is_dir))
        named.sort(key=lambda item: item[0].encode("utf-8"))
        for sort_name, entry, is_dir in named:
            key = base + sort_name
            if is_dir:
                # Descend only if the subtree can hold keys matching the prefix.
                if key.startswith(prefix) or prefix.startswith(key):
                    yield from self._walk(Path(entry.path), key, prefix, above)
            elif key.startswith(prefix):
                yield key
