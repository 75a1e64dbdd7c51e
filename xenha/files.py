"""Reading and writing files an attacker may have prepared.

- Reads of small files (inventories, secrets, password files, known_hosts,
  SSH keys) are bounded in size and refuse what is not a regular file: a
  secret file that is ``/dev/zero``, a FIFO nobody writes, or a directory gives
  an error at once instead of a hang or an exhausted memory.
- Writes (the handlers' job log, known_hosts) never follow a symbolic link in
  the final component (O_NOFOLLOW) and create files for their owner only.

Errors are OSError with a `strerror` an operator can act on.
"""

from __future__ import annotations

import errno
import os
import stat

from xenha.units import KiB, MiB

SECRET_LIMIT = 64 * KiB       # a password, a CHAP secret, an SSH key
TEXT_LIMIT = 4 * MiB          # an inventory, a known_hosts file

_KINDS = ((stat.S_ISDIR, 'a directory'), (stat.S_ISCHR, 'a character device'),
          (stat.S_ISBLK, 'a block device'), (stat.S_ISFIFO, 'a FIFO'),
          (stat.S_ISSOCK, 'a socket'))


def kind(mode: int) -> str:
    for test, name in _KINDS:
        if test(mode):
            return name
    return 'not a regular file'


class Refused(OSError):
    """A file that is not what it should be (not regular, too large, a symlink)."""

    def __init__(self, path, why: str, code: int = errno.EINVAL):
        super().__init__(code, why, str(path))


def read_bytes(path, limit: int = TEXT_LIMIT) -> bytes:
    """The whole of a regular file of at most `limit` bytes."""
    flags = os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK | getattr(os, 'O_CLOEXEC', 0)
    fd = os.open(path, flags)      # O_NONBLOCK: opening a FIFO must not wait
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Refused(path, f'not a regular file ({kind(st.st_mode)})')
        if st.st_size > limit:
            raise Refused(path, f'too large ({st.st_size} bytes, at most {limit})',
                          errno.EFBIG)
        chunks, size = [], 0
        while True:
            chunk = os.read(fd, min(65536, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:           # grew while we read it
                raise Refused(path, f'too large (more than {limit} bytes)', errno.EFBIG)
        return b''.join(chunks)
    finally:
        os.close(fd)


def read_text(path, limit: int = TEXT_LIMIT) -> str:
    """As read_bytes, decoded as UTF-8 (UnicodeDecodeError when it is not)."""
    return read_bytes(path, limit).decode('utf-8')


def read_secret(path) -> str:
    """The first line of a secret file, without its line end (blanks kept: they
    may belong to the secret)."""
    text = read_bytes(path, SECRET_LIMIT).decode('utf-8', errors='strict')
    return text.splitlines()[0] if text else ''


def open_append(path, mode: int = 0o600) -> int:
    """An fd appending to `path` (created with `mode`), never through a symlink."""
    flags = (os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NOCTTY
             | os.O_NONBLOCK | getattr(os, 'O_CLOEXEC', 0))
    try:
        fd = os.open(path, flags, mode)
    except OSError as exc:
        raise _explained(path, exc) from None
    st = os.fstat(fd)
    if stat.S_ISDIR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        os.close(fd)
        raise Refused(path, f'not a file to append to ({kind(st.st_mode)})')
    return fd


def refuse_symlink(path) -> None:
    """Raise Refused if the final component of `path` is a symbolic link."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise Refused(path, symlink_reason(), errno.ELOOP)


def symlink_reason() -> str:
    return ('is a symbolic link: refusing to write through it (it could point at '
            "someone else's file)")


def _explained(path, exc: OSError) -> OSError:
    if exc.errno == errno.ELOOP:
        return Refused(path, symlink_reason(), errno.ELOOP)
    if exc.errno == errno.ENXIO:
        return Refused(path, 'a FIFO nobody reads', errno.ENXIO)
    return exc


def describe(exc: OSError) -> str:
    """'path: why' for a message."""
    why = exc.strerror or str(exc)
    return f'{exc.filename}: {why}' if exc.filename else why
