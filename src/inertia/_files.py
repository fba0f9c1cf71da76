"""Safe file writing: atomic, never through a symbolic link, never over something not named.

Every file inertia writes goes through :func:`atomic_write_bytes`:

* the data go to an anonymous file in the target's own folder (Linux ``O_TMPFILE``; elsewhere a
  uniquely named hidden ``.<name>.<random>.tmp`` made with ``O_EXCL``), are fsynced, and only
  then appear under their name, in one step; a kill at any moment leaves the old file or the
  new one, never half a file, and (with ``O_TMPFILE``) no temporary file either;
* a target that is a symbolic link is refused (:class:`SymlinkError`): nothing is written through
  a link, and the link is not replaced;
* ``overwrite=False`` puts the file in place with a no-replace primitive (``link`` or
  ``renameat2(RENAME_NOREPLACE)``), so of several processes saving to one path exactly one
  succeeds and every other one gets :class:`FileExistsError`: none reports success for data that
  was lost;
* a failed write removes its temporary file.

:func:`rename_noreplace` moves a file or a directory into place without replacing anything, and
:func:`open_nofollow` opens an existing file for reading or appending without following a link.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

__all__ = [
    "SymlinkError",
    "atomic_write_bytes",
    "fsync_dir",
    "open_nofollow",
    "read_bytes_nofollow",
    "refuse_symlink",
    "rename_noreplace",
]


class SymlinkError(ValueError):
    """A path that inertia would write or read through is a symbolic link."""


def refuse_symlink(path: str | Path, what: str = "path") -> Path:
    """Return ``path`` as a :class:`~pathlib.Path` if it is not a symbolic link, else raise
    :class:`SymlinkError` (naming the argument, the rule and where the link points)."""
    p = Path(path)
    if p.is_symlink():
        raise SymlinkError(
            f"`{what}` must not be a symbolic link (inertia never writes or reads through a link it "
            f"did not create), got {str(p)!r} -> {os.readlink(p)!r}"
        )
    return p


def fsync_dir(path: str | Path) -> None:
    """Make new directory entries durable (best effort: not every platform can open a folder)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _umask() -> int:
    """The process umask, read without changing it (Linux ``/proc``; else the common 022)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


_LIBC: dict[str, Any] = {}


def _libc(name: str) -> Any:
    """The C library function ``name(int, char*, int, char*, int)`` (``renameat2``, ``linkat``),
    or False where there is none (not Linux, an old C library)."""
    if name not in _LIBC:
        try:
            fn = getattr(ctypes.CDLL(None, use_errno=True), name)
            fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
            fn.restype = ctypes.c_int
            _LIBC[name] = fn
        except (AttributeError, OSError):
            _LIBC[name] = False
    return _LIBC[name]


def _link_fd(fd: int, dst: str | Path) -> None:
    """Give the open anonymous file ``fd`` the name ``dst`` (``linkat`` of ``/proc/self/fd/<fd>``
    with ``AT_SYMLINK_FOLLOW``); never replaces: ``FileExistsError`` if ``dst`` exists."""
    at_fdcwd, follow = -100, 0x400
    src = f"/proc/self/fd/{fd}".encode()
    if _libc("linkat")(at_fdcwd, src, at_fdcwd, os.fsencode(dst), follow) != 0:
        err = ctypes.get_errno()
        if err == errno.EEXIST:
            raise FileExistsError(err, os.strerror(err), str(dst))
        raise OSError(err, os.strerror(err), str(dst))


def rename_noreplace(src: str | Path, dst: str | Path) -> None:
    """Move ``src`` (a file or a directory) to ``dst`` atomically, unless ``dst`` exists.

    Uses ``renameat2(..., RENAME_NOREPLACE)`` where the kernel and file system offer it; for a
    file otherwise ``link`` + ``unlink`` (also atomic and no-replace); for a directory otherwise
    a check followed by ``rename`` (a narrow race remains on such systems).

    Raises:
        FileExistsError: ``dst`` exists (as anything, a symbolic link included).
    """
    fn = _libc("renameat2")
    if fn:
        at_fdcwd, noreplace = -100, 1
        if fn(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst), noreplace) == 0:
            return
        err = ctypes.get_errno()
        if err == errno.EEXIST:
            raise FileExistsError(err, os.strerror(err), str(dst))
        if err not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise OSError(err, os.strerror(err), str(dst))
    if not os.path.isdir(src) or os.path.islink(src):
        os.link(src, dst, follow_symlinks=False)  # EEXIST if dst exists in any form
        os.unlink(src)
        return
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst))
    os.rename(src, dst)


def _anonymous(folder: Path) -> int | None:
    """An unnamed file in ``folder`` (Linux ``O_TMPFILE``), or None where that is not possible."""
    flag = getattr(os, "O_TMPFILE", 0)
    if not flag or not _libc("linkat") or not os.path.isdir("/proc/self/fd"):
        return None
    try:
        return os.open(folder, flag | os.O_WRONLY | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError:
        return None


def _write_fd(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.fsync(fd)


def atomic_write_bytes(path: str | Path, data: bytes, *, overwrite: bool = True, what: str = "path") -> Path:
    """Write ``data`` to ``path`` atomically, never through a symbolic link.

    Args:
        path: the destination (its folder must exist).
        data: the bytes to write.
        overwrite: replace an existing regular file (True) or refuse any existing entry
            (False: :class:`FileExistsError`, also when another process wins a race for it).
        what: the argument name used in error messages.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        SymlinkError: ``path`` is a symbolic link.
        FileExistsError: ``overwrite`` is False and ``path`` exists, or appeared meanwhile.
        IsADirectoryError: ``path`` is a directory.
    """
    path = refuse_symlink(path, what)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, f"`{what}` must be a file path, got a directory", str(path))
    if not overwrite and os.path.lexists(path):
        raise FileExistsError(errno.EEXIST, f"`{what}` already exists, refusing to overwrite it", str(path))
    folder = path.parent
    fd = _anonymous(folder)
    if fd is not None:
        try:
            _write_fd(fd, data)
            if not overwrite:
                try:
                    _link_fd(fd, path)  # no-replace: EEXIST if taken
                except FileExistsError as exc:
                    raise FileExistsError(
                        errno.EEXIST,
                        f"`{what}` was created by someone else meanwhile; not replaced",
                        str(path),
                    ) from exc
            else:
                _link_and_replace(fd, path, what)
        finally:
            os.close(fd)
        fsync_dir(folder)
        return path
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        _write_fd(fd, data)
        os.close(fd)
        fd = -1
        if overwrite:
            refuse_symlink(path, what)
            os.replace(tmp, path)  # replaces the entry itself, never a link's target
        else:
            try:
                rename_noreplace(tmp, path)
            except FileExistsError as exc:
                raise FileExistsError(
                    errno.EEXIST, f"`{what}` was created by someone else meanwhile; not replaced", str(path)
                ) from exc
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(folder)
    return path


def _link_and_replace(fd: int, path: Path, what: str) -> None:
    """Give the anonymous file ``fd`` a unique hidden name beside ``path``, then rename it over
    ``path`` (the name exists only for the instant between the two calls)."""
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{os.urandom(6).hex()}.tmp")
        try:
            _link_fd(fd, tmp)
            break
        except FileExistsError:
            continue
    else:
        raise FileExistsError(errno.EEXIST, "no free temporary name", str(path))
    try:
        refuse_symlink(path, what)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def open_nofollow(path: str | Path, flags: int, what: str = "path", mode: int = 0o666) -> int:
    """``os.open`` with ``O_NOFOLLOW``: a symbolic link at ``path`` raises :class:`SymlinkError`.

    Also refuses anything that is not a regular file (a FIFO, a device).
    """
    try:
        extra = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
        fd = os.open(path, flags | extra, mode)  # O_NONBLOCK: a FIFO must not hang the open
    except OSError as exc:
        if exc.errno == errno.ELOOP or os.path.islink(path):
            refuse_symlink(path, what)
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ValueError(f"`{what}` must be a regular file, got {str(path)!r}")
    return fd


def read_bytes_nofollow(path: str | Path, what: str = "path") -> bytes:
    """The contents of the regular file ``path``, refusing a symbolic link (:class:`SymlinkError`)."""
    fd = open_nofollow(path, os.O_RDONLY, what)
    with os.fdopen(fd, "rb") as f:
        return f.read()
