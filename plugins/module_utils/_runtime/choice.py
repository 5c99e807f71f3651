# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which runtime runs a service: decided here, and only here, from the service's frozen state.

A runtime is a ``_runtime.base.Runtime`` subclass; ``RUNTIMES`` maps each flip method to the runtime
that implements it. Adding a way of running the proxy is one class and one entry here
(docs/architecture.md, "Adding a runtime").
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.mtproxy.cutover.plugins.module_utils._errors import CutoverError, FreezeError
from ansible_collections.mtproxy.cutover.plugins.module_utils._runtime import pointing as pt
from ansible_collections.mtproxy.cutover.plugins.module_utils._runtime.compose import ComposeRuntime
from ansible_collections.mtproxy.cutover.plugins.module_utils._runtime.container import ContainerRuntime
from ansible_collections.mtproxy.cutover.plugins.module_utils._runtime.systemd import SystemdRuntime

RUNTIMES = (SystemdRuntime, ContainerRuntime, ComposeRuntime)
BY_METHOD = dict((method, runtime) for runtime in RUNTIMES for method in runtime.methods)
ALL_METHODS = tuple(sorted(BY_METHOD))


def runtime_class(manifest, state, requested=None):
    """The runtime of a service: the one its freeze manifest records, else state.json's, else ``requested``'s.

    A manifest of a recreated runtime (a container) names its method; one without is a unit's. A
    ``requested`` method of another runtime than the recorded one is refused: switching a service
    another way than it was frozen would leave it where it is.
    """
    if requested is not None and requested not in BY_METHOD:
        raise CutoverError('method must be one of %s' % ', '.join(ALL_METHODS))
    if manifest is not None:
        recorded = manifest.get('method') or pt.DEFAULT_METHOD
    else:
        recorded = (state or {}).get('method')
    if recorded is not None and recorded not in BY_METHOD:
        raise CutoverError('the state of the service records method=%s, which this collection does not know'
                           % recorded)
    runtime = BY_METHOD[recorded] if recorded else None
    if runtime is not None and requested is not None and BY_METHOD[requested] is not runtime:
        raise CutoverError('%s was frozen as a %s service (method=%s); method=%s contradicts it: leave the method '
                           'unset or pass method=%s' % ((manifest or {}).get('service') or 'the service', runtime.kind,
                                                        recorded, requested, recorded),
                           refused='method_mismatch', changed=False)
    return runtime or BY_METHOD[requested or pt.DEFAULT_METHOD]


def runtime_for(store, requested=None, docker_socket=None, for_freeze=False, systemd_dir=None):
    """The runtime of ``store``'s service, with its manifest and state loaded.

    For the freeze (``for_freeze``) a missing manifest is fine and the systemd runtime also returns the
    pointing class (drop-in, symlink) the freeze asks its questions of: (runtime, method_class).
    """
    manifest = store.manifest(required=not for_freeze)
    state = store.state()
    cls = runtime_class(manifest, state, requested)
    given = {'docker_socket': docker_socket, 'systemd_dir': systemd_dir}
    options = dict((name, value) for name, value in given.items() if name in cls.host_options and value)
    runtime = cls(store, manifest, state, **options)
    if not for_freeze:
        return runtime
    try:
        method_class = pt.METHODS[pt.method_of(state, None, requested)] if cls is SystemdRuntime else None
    except CutoverError as exc:
        raise FreezeError(str(exc), **exc.details)
    return runtime, method_class
