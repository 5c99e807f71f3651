# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a docker compose project's container tells, and the shapes a cutover through compose refuses.

Pure functions over ``docker inspect`` documents and file listings; nothing here runs compose.

Compose (v1 ``docker-compose`` 1.29, v2 ``docker compose`` 2.x) labels every container it makes with
its project, service, the project's working directory, the files it loaded
(``com.docker.compose.project.config_files``: absolute paths in v2, names relative to the working
directory in v1) and a hash of the service's effective config (``com.docker.compose.config-hash``).
Without ``-f`` (and without ``COMPOSE_FILE``) both versions load the first file of their default names
in the working directory, then its override file: v2 the first of ``compose.override.yml``,
``compose.override.yaml``, ``docker-compose.override.yml``, ``docker-compose.override.yaml`` that
exists, v1 the only one (v1 refuses to run when two of them exist). The collection's flip is an override
file of its own under the name matching the project's file (``compose.yaml`` ->
``compose.override.yaml``, ``docker-compose.yml`` -> ``docker-compose.override.yml``), setting only
the service's image; both versions load it on every invocation of the project that names no files.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import re

from ansible_collections.mtproxy.cutover.plugins.module_utils._proxy import container_spec as ct

LABEL = ct.COMPOSE_LABEL_PREFIX
PROJECT = LABEL + 'project'
SERVICE = LABEL + 'service'
WORKING_DIR = LABEL + 'project.working_dir'
CONFIG_FILES = LABEL + 'project.config_files'
CONFIG_HASH = LABEL + 'config-hash'
VERSION = LABEL + 'version'
ONEOFF = LABEL + 'oneoff'
# Labels compose rewrites on every recreate (the hash and files of the new config, the image digest,
# the container it replaced, the compose version that made it): checked on their own, never as spec.
VOLATILE_LABELS = (CONFIG_HASH, CONFIG_FILES, LABEL + 'image', LABEL + 'replace', VERSION)
# Compose v1 gives a recreated container the environment entry `affinity:container==<old container ID>`
# (a scheduling hint of Swarm classic): the engine shows it as a variable named 'affinity:container'.
VOLATILE_ENV = ('affinity:container',)

# Default file names, in each version's order of preference (compose-go cli/options.go; compose v1
# compose/config/config.py SUPPORTED_FILENAMES and DEFAULT_OVERRIDE_FILENAMES).
MAIN_FILES = {
    1: ('docker-compose.yml', 'docker-compose.yaml', 'compose.yml', 'compose.yaml'),
    2: ('compose.yaml', 'compose.yml', 'docker-compose.yml', 'docker-compose.yaml'),
}
OVERRIDE_FILES = {
    1: ('docker-compose.override.yml', 'docker-compose.override.yaml', 'compose.override.yml', 'compose.override.yaml'),
    2: ('compose.override.yml', 'compose.override.yaml', 'docker-compose.override.yml', 'docker-compose.override.yaml'),
}
# The first line of the collection's override file: how it is told from an operator's.
OVERRIDE_MARK = '# mtproxy.cutover override'
SERVICE_RE = re.compile(r'^[a-z0-9][a-z0-9_-]*/[a-zA-Z0-9][a-zA-Z0-9._-]*$')


def split_service(name):
    """(project, service) of ``mtproxy_cutover_service: <project>/<service>``; ValueError naming the shape."""
    if not SERVICE_RE.match(name or ''):
        raise ValueError('a compose service is named <project>/<service> (the com.docker.compose.project and '
                         '.service labels of its container, e.g. mtproxy/proxy), not %r' % name)
    project, service = name.split('/', 1)
    return project, service


def labels(container):
    return (container.get('Config') or {}).get('Labels') or {}


def of_service(container, project, service):
    """True for a container compose made for ``service`` of ``project`` (not a one-off ``run``)."""
    found = labels(container)
    return found.get(PROJECT) == project and found.get(SERVICE) == service and found.get(ONEOFF, 'False') != 'True'


def config_files(container):
    """The files compose loaded for the container, as absolute paths, in order."""
    found = labels(container)
    working_dir = found.get(WORKING_DIR) or '/'
    return [os.path.normpath(os.path.join(working_dir, name.strip()))
            for name in (found.get(CONFIG_FILES) or '').split(',') if name.strip()]


def major_version(version):
    """1 or 2 (or another int) of a compose version text such as '2.26.1-4' or 'v2.29.0'; None if none."""
    match = re.match(r'^v?(\d+)\.', (version or '').strip())
    return int(match.group(1)) if match else None


def facts(container):
    """What the container's labels say about its compose project (no secret among them)."""
    found = labels(container)
    return {
        'project': found.get(PROJECT),
        'service': found.get(SERVICE),
        'working_dir': found.get(WORKING_DIR),
        'config_files': config_files(container),
        'config_hash': found.get(CONFIG_HASH),
        'version': found.get(VERSION),
    }


def default_files(working_dir, existing, major):
    """(main file, [override files]) compose ``major`` loads in ``working_dir`` without -f.

    ``existing``: names of the files in ``working_dir``. The main file is None when none of the
    default names exists there.
    """
    main = next((name for name in MAIN_FILES.get(major, MAIN_FILES[2]) if name in existing), None)
    overrides = [name for name in OVERRIDE_FILES.get(major, OVERRIDE_FILES[2]) if name in existing]
    if main is None:
        return None, []
    return os.path.join(working_dir, main), [os.path.join(working_dir, name) for name in overrides]


def override_name(main_file):
    """The collection's override file for a project whose main file is ``main_file`` (same naming)."""
    base = os.path.basename(main_file)
    stem, ext = os.path.splitext(base)
    return os.path.join(os.path.dirname(main_file), '%s.override%s' % (stem, ext))


def override_text(project, service, image_id):
    """The collection's override file: only the service's image, pinned by ID (JSON strings are YAML)."""
    return ('%s: runs service %s of compose project %s on the Go image, pinned by ID.\n'
            '# rollback.yml removes this file and recreates the service through compose. Do not edit it: a\n'
            '# changed file stops the next cutover or rollback of the service.\n'
            'services:\n'
            '  %s:\n'
            '    image: %s\n' % (OVERRIDE_MARK, service, project, json.dumps(service), json.dumps(image_id)))


def is_ours(text):
    return (text or '').startswith(OVERRIDE_MARK)


def built_by_compose(container, project, service):
    """True when the service's image is the one compose names after it (``build:`` without ``image:``)."""
    reference = (container.get('Config') or {}).get('Image') or ''
    names = ('%s-%s' % (project, service), '%s_%s' % (project, service))
    return reference in names or reference in tuple(name + ':latest' for name in names)


def mentions_image(text):
    """True when an operator's compose file has an ``image:`` key anywhere (a hint for messages, not a parse)."""
    return bool(re.search(r'^\s+image\s*:', text or '', re.MULTILINE))


def invocation_refusal(name, container, existing, major, ours=None, override_texts=None):
    """(kind, message) when the project's own invocation would not load the collection's override, else None.

    ``existing``: names of the files in the working directory; ``ours``: the path of the collection's
    override file when it is there (a host on Go or an interrupted switch), which the project's
    invocation must then be loading; ``override_texts``: {path: text} of the operator's override files.
    """
    found = facts(container)
    working_dir = found['working_dir'] or ''
    loaded = found['config_files']
    main, overrides = default_files(working_dir, existing, major)
    theirs = [path for path in overrides if path != ours]
    if theirs:
        path = theirs[0]
        sets_image = mentions_image((override_texts or {}).get(path))
        return ('compose_override_present',
                '%s: the project already has an override file of its own, %s%s. Compose loads only one default '
                'override file (v1 refuses two), so the collection cannot add its own beside it, and it never edits '
                'yours. Way forward: move its settings into %s (`docker compose up -d` then changes nothing if they '
                'are the same) and remove it, then run the cutover again%s'
                % (name, path, ' (it sets an image: that is what the cutover changes)' if sets_image else '',
                   os.path.basename(main or 'the project\'s compose file'),
                   '; or, to keep it, set the service\'s image there yourself (no cutover)' if sets_image else ''))
    expected = [main] + ([ours] if ours else []) if main else []
    if loaded != expected:
        return ('compose_explicit_files',
                '%s: the service was started with the compose files %s, not the project\'s default ones in %s (%s): '
                'it is run with -f or COMPOSE_FILE, and such an invocation would not load the collection\'s override '
                'file. Way forward: run the project with its default files (`docker compose up -d` in %s, no -f), or '
                'point its image at the Go image in your own files yourself'
                % (name, ', '.join(loaded) or '(none)', working_dir, ', '.join(expected) or 'no compose.yaml or '
                   'docker-compose.yml there', working_dir))
    if built_by_compose(container, found['project'], found['service']):
        return ('compose_build',
                '%s: the service\'s image is built by compose (`build:` without `image:`, image %s): an image set '
                'by an override would be rebuilt or retagged by the next `docker compose up --build`. Way forward: '
                'give the service an `image:` name for what it builds, `docker compose up -d`, then run the '
                'cutover again' % (name, (container.get('Config') or {}).get('Image')))
    return None


def replicas_refusal(name, containers):
    """(kind, message) when the service runs as more than one container, else None."""
    if len(containers) <= 1:
        return None
    names = sorted((c.get('Name') or '').lstrip('/') for c in containers)
    return ('compose_replicas',
            '%s runs as %d containers (%s): the cutover flips one proxy per inventory host. Way forward: scale the '
            'service to one container (`docker compose up -d --scale <service>=1`, or one service per proxy), then '
            'run the cutover again' % (name, len(containers), ', '.join(names)))


def spec_of(container, image):
    """``container_spec.spec_of`` without the labels compose rewrites on every recreate, with the project's
    identity (project, service, working directory) beside it."""
    spec = ct.spec_of(container, image)
    spec['labels'] = dict((k, v) for k, v in spec['labels'].items() if k not in VOLATILE_LABELS)
    spec['env'] = dict((k, v) for k, v in spec['env'].items() if k not in VOLATILE_ENV)
    found = facts(container)
    spec['compose'] = {'project': found['project'], 'service': found['service'], 'working_dir': found['working_dir']}
    return spec
