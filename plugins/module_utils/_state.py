# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The state directory of a proxy service on its host: every path and the one reader of its files.

``<state_dir>/<service>/`` (directory 0700, files 0600, root). Nothing else in the collection knows
a file name below it; every reader goes through ``StateDir``, which checks what it reads:

| file | written by | content |
|---|---|---|
| ``manifest.json`` | the freeze | how the service runs C: unit or container spec, live argv (secrets included), checksums |
| ``baseline.json`` | the freeze | ``/stats`` window summary of C at freeze time |
| ``state.json`` | the switch | ``schema``, ``current`` (c/go), ``binary``, ``method``, ``previous_good``, ``history`` |
| ``prewarm.env``, ``prewarm.log`` | the pre-warm | the unit's ``Environment=`` for the transient unit; the pre-warm's ``-l`` log |
| ``bridge.env``, ``bridge.log`` | the bridge | the same for the bridge unit |
| ``bridge-conntrack.json`` | the bridge | the conntrack TCP CLOSE timeout to restore |
| ``run.lock`` (``.run.lock.guard``) | every playbook | the run that holds the service (``_flow/lock.py``) |
| ``run.lock.taken-over`` | a takeover | which run took the service from which, kept after the taker released it |
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os

from ansible_collections.mtproxy.cutover.plugins.module_utils._errors import StateError
from ansible_collections.mtproxy.cutover.plugins.module_utils._host.files import write_atomic

DEFAULT_STATE_DIR = '/var/lib/mtproxy-cutover'
SCHEMA = 1
HISTORY_LIMIT = 50
TARGETS = ('go', 'c')

MANIFEST = 'manifest.json'
BASELINE = 'baseline.json'
STATE = 'state.json'
PREWARM_ENV = 'prewarm.env'
PREWARM_LOG = 'prewarm.log'
BRIDGE_ENV = 'bridge.env'
BRIDGE_LOG = 'bridge.log'
BRIDGE_CONNTRACK = 'bridge-conntrack.json'
LOCK = 'run.lock'
LOCK_GUARD = '.run.lock.guard'
LOCK_TAKEN_OVER = 'run.lock.taken-over'


def write_private_json(path, document):
    """Write ``document`` root-only (directory 0700, file 0600) and atomically (rename)."""
    write_private_text(path, json.dumps(document, indent=2, sort_keys=True) + '\n')


def write_private_text(path, text):
    """Write ``text`` root-only (directory 0700, file 0600) and atomically (rename in the same directory)."""
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        os.makedirs(directory, 0o700)
    os.chmod(directory, 0o700)
    write_atomic(path, text, 0o600)


class StateDir:
    """``<root>/<service>/``: where one service's manifest, baseline and switch state live."""

    def __init__(self, root, service):
        self.root = root or DEFAULT_STATE_DIR
        self.service = service
        self.path = os.path.join(self.root, service)

    def file(self, name):
        return os.path.join(self.path, name)

    @property
    def manifest_path(self):
        return self.file(MANIFEST)

    @property
    def baseline_path(self):
        return self.file(BASELINE)

    @property
    def state_path(self):
        return self.file(STATE)

    # -- reading -----------------------------------------------------------------------------------

    def read_json(self, name):
        """The document in ``name``, or None when the file does not exist; StateError when unreadable."""
        path = self.file(name)
        try:
            with open(path) as handle:
                return json.load(handle)
        except (IOError, OSError) as exc:
            if not os.path.exists(path):
                return None
            raise StateError('%s cannot be read: %s' % (path, exc.strerror or exc))
        except ValueError:
            raise StateError('%s is not valid JSON: fix or remove it (rollback.yml and a re-freeze rebuild it)' % path)

    def manifest(self, required=True):
        """The freeze manifest; with ``required`` a StateError naming the way forward when there is none."""
        document = self.read_json(MANIFEST)
        if document is None:
            if required:
                raise StateError('no freeze manifest at %s: freeze %s first (cutover.yml does, in its first step)'
                                 % (self.manifest_path, self.service))
            return None
        if not isinstance(document, dict) or not document.get('argv'):
            raise StateError('freeze manifest %s holds no frozen argv: remove it and freeze again' % self.manifest_path)
        return document

    def state(self):
        """The switch state, or None when the service was never switched. Never guessed from mtimes."""
        document = self.read_json(STATE)
        if document is None:
            return None
        if not isinstance(document, dict) or document.get('schema') != SCHEMA:
            raise StateError('switch state %s has an unknown schema (expected %d)' % (self.state_path, SCHEMA))
        return document

    def method(self):
        """The method state.json records (how the service was last switched), or None."""
        return (self.state() or {}).get('method')

    def releases_in_use(self):
        """Directories of the Go releases the service runs or ran (its state and switch history)."""
        state = self.state() or {}
        binaries = [state.get('binary')] if state.get('current') == 'go' else []
        binaries += [entry.get('binary') for entry in state.get('history') or [] if entry.get('to') == 'go']
        return sorted(set(os.path.dirname(binary) for binary in binaries
                          if binary and os.path.isabs(binary)))

    # -- writing -----------------------------------------------------------------------------------

    def write_json(self, name, document):
        write_private_json(self.file(name), document)

    def write_text(self, name, text):
        write_private_text(self.file(name), text)

    def save_state(self, state):
        self.write_json(STATE, state)

    def remove(self, name):
        """Remove ``name`` if it is there; True when it was."""
        try:
            os.unlink(self.file(name))
            return True
        except OSError:
            return False


def transition(state, manifest, target, binary, method, timings, at, result='ok', extra_previous=None):
    """New state after a switch to ``target`` (pure). ``state`` may be None (first switch)."""
    old = dict(state or {})
    previous_good = old.get('previous_good')
    if target == 'go':
        previous_good = {'flavor': 'c', 'binary': manifest['argv'][0]}
        if extra_previous:
            previous_good.update(extra_previous)
    history = list(old.get('history') or [])
    history.append({'at': at, 'from': old.get('current'), 'to': target, 'binary': binary,
                    'method': method, 'result': result, 'timings': timings})
    return {
        'schema': SCHEMA,
        'current': target,
        'binary': binary,
        'method': method,
        'previous_good': previous_good,
        'history': history[-HISTORY_LIMIT:],
    }


def state_agrees(state, target, binary, method):
    return bool(state) and state.get('current') == target and state.get('binary') == binary \
        and state.get('method') == method
