# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Files on the host: atomic writes, tolerant reads, the interpreter line of a script."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

# A module sets this to its AnsibleModule.atomic_move (_host.module.use_module), which keeps the SELinux
# context, owner and attributes of a file it replaces; without it (unit tests) a plain rename.
ATOMIC_MOVE = None


def use_atomic_move(atomic_move):
    """Make every write of this module run go through ``atomic_move`` (AnsibleModule.atomic_move)."""
    global ATOMIC_MOVE  # pylint: disable=global-statement
    ATOMIC_MOVE = atomic_move


def move_into_place(tmp, path, mode):
    """Rename ``tmp`` onto ``path`` (AnsibleModule.atomic_move when set), ``path`` ending with ``mode``.

    atomic_move gives a file it creates the umask's mode: the umask is 077 meanwhile, so that a file
    that carries a secret is never readable by others, not even between the move and the chmod.
    """
    if ATOMIC_MOVE is None:
        os.rename(tmp, path)
        return
    umask = os.umask(0o077)
    try:
        ATOMIC_MOVE(tmp, path)
    finally:
        os.umask(umask)
    os.chmod(path, mode)


def write_atomic(path, data, mode):
    """Write ``data`` (str) to ``path`` via a temporary file in the same directory, then move it into place.

    The temporary file is created with ``mode`` (no window in which a secret is readable by others);
    one that a crash left behind is named ``.<name>.tmp.<pid>``.
    """
    directory = os.path.dirname(path)
    tmp = os.path.join(directory, '.%s.tmp.%d' % (os.path.basename(path), os.getpid()))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data.encode('utf-8'))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        move_into_place(tmp, path, mode)
    except Exception:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_text(path):
    try:
        with open(path) as handle:
            return handle.read()
    except (IOError, OSError):
        return None


def fragment_mode(fragment_path):
    """Permission bits of the vendor unit file (the drop-in carries the same secret); 0600 if unknown."""
    try:
        return os.stat(fragment_path).st_mode & 0o777
    except (OSError, TypeError):
        return 0o600


def read_shebang(path):
    """Interpreter words of a script's ``#!`` line, or None for a binary/unreadable file."""
    try:
        with open(path, 'rb') as handle:
            head = handle.read(256)
    except (IOError, OSError):
        return None
    if not head.startswith(b'#!'):
        return None
    line = head[2:].split(b'\n', 1)[0].decode('utf-8', 'replace').strip()
    if not line:
        return None
    # The kernel passes everything after the interpreter as one optional argument.
    parts = line.split(None, 1)
    return parts
