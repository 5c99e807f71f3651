# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
name: image_platform_problem
short_description: Say why a container host cannot run an image built for another platform
version_added: "0.1.0"
author:
  - mtproxy.cutover contributors (@mtproxy-cutover)
description:
  - Takes an image as C(community.docker.docker_image_info) returns it (C(Id), C(Os), C(Architecture),
    C(Variant)) and the host's machine (C(uname -m), or the engine's C(Architecture) as C(docker info)
    prints it), and returns why the host cannot run that image, naming both platforms and the way
    forward; empty when the image is a Linux image of the host's architecture (GOARCH).
  - The container counterpart of the ELF check of M(mtproxy.cutover.mtproxy_stage) (the runbook's
    "Linux amd64 validation"); an image of another architecture is refused before any pre-warm instead
    of failing at its first start with C(exec format error).
  - Only what it knows is refused. An image that names no architecture or a machine this check does not
    know (no GOARCH for that C(uname -m)) is not.
options:
  _input:
    description: The image (one element of C(docker_image_info)'s C(images)).
    type: dict
    required: true
  machine:
    description: The host's C(uname -m) (C(x86_64), C(aarch64), ...) or the engine's C(Architecture).
    type: str
    required: true
"""

EXAMPLES = r"""
- name: Check the Go image is built for this host's machine
  ansible.builtin.assert:
    that: problem | length == 0
    fail_msg: "{{ inventory_hostname }}: {{ problem }}"
  vars:
    problem: "{{ image_info.images[0] | mtproxy.cutover.image_platform_problem(machine) }}"
"""

RETURN = r"""
_value:
  description: Why the host cannot run the image, with the way forward (empty when it can).
  type: str
"""

from ansible_collections.mtproxy.cutover.plugins.module_utils._host.elf import host_goarch


def platform_of(image):
    """``linux/arm64/v8``-style name of an image's platform (its Os, Architecture and Variant)."""
    parts = [str(image.get(key) or '').strip() for key in ('Os', 'Architecture', 'Variant')]
    return '/'.join(part for part in parts if part) or 'an unnamed platform'


def image_platform_problem(image, machine):
    image = image or {}
    arch = str(image.get('Architecture') or '').strip()
    image_os = str(image.get('Os') or '').strip()
    machine = str(machine or '').strip()
    host_arch = host_goarch(machine)
    wrong_os = image_os and image_os != 'linux'
    wrong_arch = arch and host_arch and arch != host_arch
    if not (wrong_os or wrong_arch):
        return ''
    host_platform = 'linux/%s' % host_arch if host_arch else 'linux'
    return ('the Go image %s is built for %s and this host runs %s (%s): a container of it would not start there '
            '(exec format error). Build the image for %s (docker build --platform %s), save it with docker save '
            'and set mtproxy_cutover_go_image_id and mtproxy_cutover_go_image_archive to that build'
            % (image.get('Id') or '?', platform_of(image), machine or '?', host_platform, host_platform,
               host_platform))


class FilterModule(object):
    def filters(self):
        return {'image_platform_problem': image_platform_problem}
