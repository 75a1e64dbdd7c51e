"""One grammar per kind of value: what a host name, a path, a name … may be.

Every string of the inventory (and every option that ends up in a rendered
configuration) belongs to one kind below.  The inventory checks each value
against its kind when it loads, with file:line; `xenha render` checks again
before it writes a value anywhere (defence in depth: a value that did not come
through the loader, or a grammar loosened one day, still never reaches Nagios'
/bin/sh or an xl config unchecked), and then escapes it for each output format.

Each grammar is a function ``check(value) -> None | str``: None when the value
belongs to the kind, else what is wrong, in words for an operator (the caller
adds the place).  Nothing here echoes a value.

Imports stay light (re only): the checks that read the inventory run thousands
of times a day.  `ipaddress` is imported only for a value that looks like IPv6.
"""

from __future__ import annotations

import re
import shlex

# C0 controls, DEL, C1 controls (U+0085 is a line end to Python), Unicode line
# and paragraph separators, zero-width and bidirectional controls, the BOM:
# nothing an operator means to put in a path or a name, and each either ends a
# line somewhere (Nagios, xl, Icinga 2, a terminal, the journal) or hides text.
CONTROL = re.compile('[\x00-\x1f\x7f-\x9f\u2028\u2029\u200b-\u200f\u202a-\u202e'
                     '\u2060-\u2064\u2066-\u2069\ufeff]')

MAX_PATH = 4096          # PATH_MAX
MAX_ARGV = 1024          # a toolstack command prefix
MAX_TEXT = 1024          # Xen's guest command line (MAX_GUEST_CMDLINE), agent options


def control(value: str) -> str | None:
    """The first control character of `value`, named (or None)."""
    m = CONTROL.search(value)
    if not m:
        return None
    c = m.group()
    names = {'\n': 'a line break', '\r': 'a carriage return', '\t': 'a tab',
             '\x00': 'a NUL byte', '\x1b': 'an escape character (terminal control)'}
    return names.get(c, f'a control character (U+{ord(c):04X})')


def _no_control(value: str) -> str | None:
    c = control(value)
    return f'contains {c}' if c else None


# ---------------------------------------------------------------- hosts
_LABEL = r'[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?'
_HOSTNAME = re.compile(rf'{_LABEL}(?:\.{_LABEL})*')
_IPV4 = re.compile(r'(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?:\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}')
_DOTTED = re.compile(r'[\d.]+')


def ipv6(value: str) -> bool:
    if not re.fullmatch(r'[0-9A-Fa-f:.]+(?:%[A-Za-z0-9_.-]{1,15})?', value) or ':' not in value:
        return False
    import ipaddress        # only here: ~4 ms, and most inventories have no IPv6
    try:
        ipaddress.IPv6Address(value)
    except ValueError:
        return False
    return True


def host(value: str) -> str | None:
    """A host name (RFC 1123), an IPv4 address or an IPv6 literal (no brackets)."""
    if not isinstance(value, str) or not value:
        return 'empty'
    if _IPV4.fullmatch(value) or ipv6(value):
        return None
    if _DOTTED.fullmatch(value):
        return 'not an IPv4 address (four numbers 0-255, no leading zeros)'
    if len(value) <= 253 and _HOSTNAME.fullmatch(value):
        return None
    return ('not a host name or address (RFC 1123: letters, digits and "-" in '
            'dot-separated labels; or an IPv4 or IPv6 address)')


def portal(value: str) -> tuple[str, int]:
    """'host', 'host:port' or '[IPv6]:port' → (host, port); ValueError saying why."""
    shape = "expected 'host' or 'host:port'"
    m = re.fullmatch(r'\[([^\]]*)\](?::(\d{1,5}))?|([^:\[\]]*)(?::(\d{1,5}))?', value) \
        if isinstance(value, str) else None
    if not m:
        raise ValueError(shape)
    bracketed = m.group(1) is not None
    h = m.group(1) if bracketed else m.group(3)
    port = int(m.group(2) or m.group(4) or 3260)
    if not 0 < port < 65536:
        raise ValueError(shape)
    if bracketed and not ipv6(h):
        raise ValueError('not an IPv6 address inside [ ]')
    why = host(h)
    if why:
        raise ValueError(f'its host is {why}' if h else shape)
    return h, port


# ---------------------------------------------------------------- paths, commands
def path(value: str) -> str | None:
    """An absolute path: starts with '/', no control characters, no trailing blank."""
    if not isinstance(value, str) or not value.startswith('/'):
        return 'must be an absolute path (starting with /)'
    if len(value) > MAX_PATH:
        return f'longer than {MAX_PATH} characters'
    if value != value.rstrip():
        return 'ends with a blank (Nagios, TOML editors and shells drop it)'
    return _no_control(value)


_DEVICE = re.compile(r'/[A-Za-z0-9._/:@+\[\]-]*')


def device(value: str) -> str | None:
    """A block device path as xl's disk spec takes it: no ',', '=' or blanks."""
    why = path(value)
    if why:
        return why
    if not _DEVICE.fullmatch(value):
        return ("not a device path (letters, digits and . _ / : @ + - [ ]; xl's "
                "disk spec splits on ',' and '=')")
    return None


_PROGRAM = re.compile(r'[A-Za-z0-9_][A-Za-z0-9_.+-]{0,254}')


def program(value: str) -> str | None:
    """An absolute path or a bare program name (found in PATH)."""
    if isinstance(value, str) and value.startswith('/'):
        return path(value)
    if isinstance(value, str) and _PROGRAM.fullmatch(value):
        return None
    return 'not a program (an absolute path, or a name of letters, digits, . _ + -)'


def argv(value: str) -> str | None:
    """A shell-quoted argv prefix (e.g. 'sudo -n /usr/sbin/xl'): splittable,
    not empty, no control characters; its first word a program."""
    if not isinstance(value, str):
        return 'expected a string'
    if len(value) > MAX_ARGV:
        return f'longer than {MAX_ARGV} characters'
    why = _no_control(value)
    if why:
        return why
    try:
        words = shlex.split(value)
    except ValueError as exc:
        return f'not a shell-quoted command: {exc}'
    if not words:
        return 'not a shell-quoted command: empty'
    why = program(words[0])
    return f'its first word is {why}' if why else None


def text(value: str) -> str | None:
    """Free text kept on one line: no control characters, at most MAX_TEXT."""
    if not isinstance(value, str):
        return 'expected a string'
    if len(value) > MAX_TEXT:
        return f'longer than {MAX_TEXT} characters'
    return _no_control(value)


# ---------------------------------------------------------------- names
_NAME = re.compile(r'[A-Za-z0-9][A-Za-z0-9_.-]{0,63}')


def name(value: str) -> str | None:
    """An object name: a Nagios host and Icinga 2 object, a Xen domain name and
    a file name at once."""
    if isinstance(value, str) and _NAME.fullmatch(value):
        return None
    return ("bad name: use letters, digits, '.', '_' and '-' (at most 64, starting "
            "with a letter or digit)")


def domain(value: str) -> str | None:
    """A Xen domain name: a name that xl cannot mistake for a domain id or dom0."""
    why = name(value)
    if why:
        return why
    if value.isdigit():
        return 'all digits: xl would take it for a domain id'
    if value.lower() == 'domain-0':
        return "'Domain-0' is the name of dom0 itself"
    return None


_SERVICE = re.compile(r'[A-Za-z0-9](?:[A-Za-z0-9 _.-]{0,62}[A-Za-z0-9_.-])?')


def service(value: str) -> str | None:
    """A Nagios service description / Icinga 2 service name (spaces allowed inside)."""
    if isinstance(value, str) and _SERVICE.fullmatch(value) and '  ' not in value:
        return None
    return ("bad service name: letters, digits, single spaces, '.', '_' and '-' (at "
            "most 64, no space at either end)")


_USER = re.compile(r'[A-Za-z_][A-Za-z0-9_.-]{0,31}')


def user(value: str) -> str | None:
    """A POSIX login name (the SSH user)."""
    if isinstance(value, str) and _USER.fullmatch(value):
        return None
    return "not a user name (letters, digits, '_', '.', '-'; at most 32, not starting " \
           "with a digit, '.' or '-')"


_CHAP_USER = re.compile(r'[A-Za-z0-9][A-Za-z0-9_.@:+-]{0,63}')


def chap_user(value: str) -> str | None:
    if isinstance(value, str) and _CHAP_USER.fullmatch(value):
        return None
    return "not a CHAP user name (letters, digits and _ . @ : + -, at most 64)"


_IQN = re.compile(r'iqn\.\d{4}-(?:0[1-9]|1[0-2])\.[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?'
                  r'(?::[A-Za-z0-9.:_-]+)?')
_EUI = re.compile(r'eui\.[0-9A-Fa-f]{16}')
_NAA = re.compile(r'naa\.[0-9A-Fa-f]{16}(?:[0-9A-Fa-f]{16})?')


def iqn(value: str) -> str | None:
    """An iSCSI name (RFC 3720/3721): iqn.YYYY-MM.authority[:id], eui.(16 hex),
    naa.(16 or 32 hex); at most 223 bytes."""
    if isinstance(value, str) and len(value.encode()) <= 223 and (
            _IQN.fullmatch(value) or _EUI.fullmatch(value) or _NAA.fullmatch(value)):
        return None
    return ("not an iSCSI name (iqn.YYYY-MM.reversed.domain[:id] of letters, digits "
            "and . - : _, or eui./naa. with hex digits)")


_MAC = re.compile(r'[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}')


def mac(value: str) -> str | None:
    """A unicast Ethernet address, six hex pairs with ':'."""
    if not isinstance(value, str) or not _MAC.fullmatch(value):
        return 'not a MAC address (six hex pairs separated by :)'
    if int(value[:2], 16) & 1:
        return 'a multicast MAC address (a guest NIC needs a unicast one)'
    return None


_IFACE = re.compile(r'[A-Za-z0-9_.-]{1,15}')


def interface(value: str) -> str | None:
    """A Linux network interface name (IFNAMSIZ: at most 15)."""
    if isinstance(value, str) and _IFACE.fullmatch(value) and value not in ('.', '..'):
        return None
    return "not a network interface name (1 to 15 letters, digits, '_', '.', '-')"


_FENCE_AGENT = re.compile(r'fence_[A-Za-z0-9_]+')


def fence_agent(value: str) -> str | None:
    if isinstance(value, str) and _FENCE_AGENT.fullmatch(value):
        return None
    if isinstance(value, str) and value.startswith('/'):
        why = path(value)
        if why is None and re.search(r'\s', value):
            why = 'contains a blank'
        if why is None and not _FENCE_AGENT.fullmatch(value.rsplit('/', 1)[1]):
            why = "its file name is not 'fence_*'"
        return why
    return "not a fence agent (a 'fence_*' name or an absolute path)"


_VIF_KEY = re.compile(r'[a-z][a-z0-9_-]{0,31}')
_VIF_VALUE = re.compile(r'[A-Za-z0-9_.:/@+-]{1,255}')


def vif(value: str) -> str | None:
    """An xl vif spec: comma-separated key=value, the mac a unicast MAC, the
    bridge and vifname interface names."""
    if not isinstance(value, str) or not value:
        return 'empty'
    why = _no_control(value)
    if why:
        return why
    for item in value.split(','):
        key, eq, val = item.partition('=')
        if not eq or not _VIF_KEY.fullmatch(key) or not _VIF_VALUE.fullmatch(val):
            return ('not an xl vif spec (key=value items separated by ",", values of '
                    'letters, digits and _ . : / @ + -)')
        if key == 'mac' and mac(val):
            return f'mac: {mac(val)}'
        if key in ('bridge', 'vifname') and interface(val):
            return f'{key}: {interface(val)}'
    return None


def macro(value: str) -> bool:
    """A Nagios resource macro ($USER1$ … $USER256$), written as it is."""
    return bool(re.fullmatch(r'\$USER(?:[1-9]\d?|1\d\d|2[0-4]\d|25[0-6])\$', value))


def path_or_macro(value: str) -> str | None:
    """A render option: an absolute path, or a Nagios $USERn$ macro."""
    if isinstance(value, str) and macro(value):
        return None
    why = path(value)
    return f'{why} (or a $USERn$ macro)' if why else None
