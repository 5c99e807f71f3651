#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: mtproxy_stage
short_description: Put a release binary on a proxy host, sha256-verified, in one or two round trips
description:
  - Checks the sha256 of O(src) on the controller, then whether O(dest) on the host already has it
    (one round trip; its mode and root ownership are corrected if needed).
  - Otherwise sends the file's bytes to a small Python program on the host (a second round trip) that
    creates the parent directories (0755), writes a temporary file beside O(dest), hashes it while
    writing and renames it onto O(dest) only when the sha256 matches. A copy that differs never takes
    the destination's place, and nothing else is left behind.
  - Before anything is copied, the binary must run on the host (the runbook's "Linux amd64 validation is
    available") means a Linux ELF executable whose class, byte order and machine are the host's (its C(uname -m), read
    by the first round trip); a C(#!) script is judged by its interpreter. A binary for another machine or system
    is refused naming both and the build to stage (RV(refused=wrong_architecture)).
  - This is an action plugin; the host needs C(python3) (the configured C(ansible_python_interpreter),
    else C(/usr/bin/python3)) and runs as the become user when become is set, as pipelining would.
version_added: "0.1.0"
author:
  - mtproxy.cutover contributors (@mtproxy-cutover)
options:
  src:
    description: The file on the controller.
    type: path
    required: true
  dest:
    description: Its path on the host.
    type: path
    required: true
  sha256:
    description: Expected sha256 of O(src) and, after staging, of O(dest) (64 hex digits).
    type: str
    required: true
  mode:
    description: Octal mode of O(dest).
    type: str
    default: "0755"
requirements:
  - Python 3 on the managed host (standard library only); the staging program runs there.
attributes:
  action:
    description: An action plugin; it reads O(src) on the controller and runs a small program on the host.
    support: full
  async:
    description: The transfer runs in the task's worker; C(async) is not supported.
    support: none
  check_mode:
    description: In check mode the controller file and the host are checked; nothing is sent or changed.
    support: full
  diff_mode:
    description: The staged file is a binary; the result names its path and sha256 instead of a diff.
    support: none
  platform:
    description: POSIX hosts with Python 3.
    support: full
    platforms: posix
notes:
  - Compared with M(ansible.builtin.copy), which needs a stat module, a temporary directory, the transfer,
    the copy module and a cleanup, a fresh host costs two round trips and an already staged one costs one.
"""

EXAMPLES = r"""
- name: Stage the Go binary beside the C one
  mtproxy.cutover.mtproxy_stage:
    src: ./mtproto-proxy-go
    dest: /opt/MTProxy/releases/go-0123456789ab/mtproto-proxy-go
    sha256: "{{ mtproxy_cutover_go_sha256 }}"
"""

RETURN = r"""
dest:
  description: Path of the staged file on the host.
  returned: always
  type: str
  sample: /opt/MTProxy/releases/go-0123456789ab/mtproto-proxy-go
sha256:
  description: The verified sha256 (lower case).
  returned: always
  type: str
architecture:
  description: What the binary is (C(binary)) and what the host runs (C(host)).
  returned: when the host was reached
  type: dict
  sample: {binary: "ELF 64-bit LSB executable, x86-64 (GOARCH amd64)", host: "x86_64 (ELF 64-bit LSB x86-64, GOARCH amd64)"}
refused:
  description: C(wrong_architecture) when the binary cannot run on the host.
  returned: failure
  type: str
"""
