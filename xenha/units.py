"""Sizes: the binary units and the one grammar for a size written by a person.

Every size xenha reads (a check's ``--min-capacity 4G``, the inventory's
``memory = "512M"``, the study's ``--size 300M``) goes through `parse_size`:
a number, then optionally K, M, G, T (P for the checks) with an optional
``B`` or ``iB``; the suffixes are powers of 1024.  What a plain number means
is the caller's: bytes on a command line, MiB in the inventory.
"""

from __future__ import annotations

import re

KiB = 1024
MiB = 1024 ** 2
GiB = 1024 ** 3
TiB = 1024 ** 4
UNITS = {'': 1, 'K': KiB, 'M': MiB, 'G': GiB, 'T': TiB, 'P': 1024 ** 5}


def parse_size(text: str | int | float, plain: int = 1, suffixes: str = 'KMGTP') -> int:
    """Bytes from ``4G``, ``512M``, ``1.5GiB``, ``4 GB``, ``64k``; a plain number
    (or an int or float, as TOML gives them: 0 up to 1024**4, finite) counts
    `plain` bytes, and a lone ``B`` suffix is allowed when that is 1.
    ValueError when it is none of those.

    >>> parse_size('4G'), parse_size('512M'), parse_size('100'), parse_size('100B')
    (4294967296, 536870912, 100, 100)
    >>> parse_size('1.5G', plain=MiB), parse_size('2048', plain=MiB) == 2 * GiB
    (1610612736, True)
    """
    if isinstance(text, bool):
        raise ValueError(f'not a size: {text!r}')
    if isinstance(text, (int, float)):
        if not 0 <= text < TiB:               # also refuses inf and nan
            raise ValueError(f'not a size: {text!r}')
        return int(text * plain)
    bare = '|B' if plain == 1 else ''
    m = re.fullmatch(rf'\s*(\d+(?:\.\d+)?)\s*(?:([{suffixes}])(?:i?B)?{bare})?\s*',
                     str(text), re.I)
    if not m:
        raise ValueError(f'not a size: {text!r} (try 512M, 4G)')
    return int(float(m[1]) * (UNITS[m[2].upper()] if m[2] else plain))
