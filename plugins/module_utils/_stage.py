# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Put a release file on a host, checksum-verified, in as few round trips as possible.

This file is also the program the mtproxy_stage action plugin runs on the host (its source is sent
with ``python3 -c``), so it imports nothing outside the standard library:

- ``check DEST SHA256 MODE FIX``: is DEST there with that sha256? With FIX=1 its mode is corrected.
- ``install DEST SHA256 MODE``: the bytes come on stdin; they are written to a temporary file beside
  DEST (the release directory is created 0755 first), hashed while written, and renamed onto DEST
  only when the sha256 matches. A copy that differs never takes the destination's place.

Both print one JSON object; install exits 1 (with ``msg``) when the sha256 differs.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import json
import os
import sys
import tempfile

CHUNK = 1 << 20


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as handle:
        for block in iter(lambda: handle.read(CHUNK), b''):
            digest.update(block)
    return digest.hexdigest()


def _own(path, mode):
    changed = False
    st = os.stat(path)
    if st.st_mode & 0o7777 != mode:
        os.chmod(path, mode)
        changed = True
    if os.geteuid() == 0 and (st.st_uid, st.st_gid) != (0, 0):
        os.chown(path, 0, 0)
        changed = True
    return changed


def check(dest, sha256, mode, fix):
    """{present, sha256 (of DEST or None), changed (mode/owner corrected), machine (uname -m of the host)}."""
    machine = os.uname()[4]
    if not os.path.isfile(dest):
        return {'present': False, 'sha256': None, 'changed': False, 'machine': machine}
    actual = file_sha256(dest)
    present = actual == sha256
    changed = bool(present and fix and _own(dest, mode))
    return {'present': present, 'sha256': actual, 'changed': changed, 'machine': machine}


def _make_dirs(directory):
    missing = []
    while directory and not os.path.isdir(directory):
        missing.append(directory)
        directory = os.path.dirname(directory)
    for path in reversed(missing):
        os.mkdir(path, 0o755)
        os.chmod(path, 0o755)


def install(dest, sha256, mode, stream):
    """Write ``stream`` beside ``dest``, verify, rename. {changed, sha256} or ValueError on a mismatch."""
    directory = os.path.dirname(dest)
    _make_dirs(directory)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix='.%s.' % os.path.basename(dest), suffix='.partial')
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, 'wb') as handle:
            for block in iter(lambda: stream.read(CHUNK), b''):
                digest.update(block)
                handle.write(block)
            handle.flush()
            os.fsync(handle.fileno())
        if digest.hexdigest() != sha256:
            raise ValueError('the copy has sha256 %s, expected %s; %s was left as it was'
                             % (digest.hexdigest(), sha256, dest))
        _own(tmp, mode)
        os.rename(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return {'changed': True, 'sha256': sha256}


def main(argv, stdin, stdout):
    try:
        if argv[:1] == ['check'] and len(argv) == 5:
            result = check(argv[1], argv[2], int(argv[3], 8), argv[4] == '1')
        elif argv[:1] == ['install'] and len(argv) == 4:
            result = install(argv[1], argv[2], int(argv[3], 8), stdin)
        else:
            raise ValueError('usage: check DEST SHA256 MODE FIX | install DEST SHA256 MODE')
    except (ValueError, IOError, OSError) as exc:
        stdout.write(json.dumps({'failed': True, 'msg': str(exc)}) + '\n')
        return 1
    stdout.write(json.dumps(result) + '\n')
    return 0


if __name__ == '__main__':
    raise SystemExit(main(sys.argv[1:], getattr(sys.stdin, 'buffer', sys.stdin), sys.stdout))
