# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one error hierarchy of the host-side code.

Every failure a flow raises is a ``CutoverError``: its message is already redacted (no ``-S``/``-P``
value, no secret file content) and names the cause and the way forward; ``details`` go into the
module result as they are (``refused``, ``changed``, ``drift``, ``journal``, ...). A module catches
``CutoverError`` once. Parsers of pure data (argv, unit files, /stats bodies) raise ``ValueError``
subclasses instead; the flow that called them turns those into one of these with the host's context.
``_proxy.refusals.Refusal`` (a host shape refused before anything changes) is one too.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class CutoverError(Exception):
    """A failure whose message is already redacted; ``details`` go into the module result."""

    def __init__(self, message, **details):
        super(CutoverError, self).__init__(message)
        self.details = details


class HostError(CutoverError):
    """A host primitive failed (systemctl, /proc, a file, the Docker engine, a network namespace)."""


class DockerError(HostError):
    """An engine call failed: ``status`` is the HTTP status (0 when the socket did not answer)."""

    def __init__(self, message, status=0, **details):
        super(DockerError, self).__init__(message, **details)
        self.status = status


class NetnsError(HostError):
    """A network namespace could not be entered."""


class ConntrackError(HostError):
    """The kernel's conntrack table could not be read or changed (netfilter netlink)."""


class StateError(CutoverError):
    """The state directory of a service is missing a file a step needs, or holds one it cannot read."""


class FreezeError(CutoverError):
    """The freeze refused or failed; ``details['drift']`` lists what changed since the last freeze."""


class BaselineError(CutoverError):
    """The C baseline could not be taken or read back."""


class PrewarmError(CutoverError):
    """A candidate (pre-warm or bridge) did not start, get ready or stop as the service would."""


class SwitchError(CutoverError):
    """A flip or a rollback failed; ``details['changed']`` says whether the host was changed."""


class BridgeError(SwitchError):
    """The bridge handover failed."""


class LockedError(CutoverError):
    """Another run holds the service (``details['locked_by']``); nothing was changed."""

    def __init__(self, message, **details):
        details.setdefault('refused', 'locked')
        super(LockedError, self).__init__(message, **details)
