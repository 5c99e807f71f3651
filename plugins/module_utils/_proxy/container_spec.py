# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A proxy container's spec: what the freeze records, what a recreate must keep, how two are compared.

Pure functions over ``docker inspect`` documents (Engine API ``GET /containers/{id}/json`` and
``GET /images/{id}/json``); nothing here talks to the engine.

``spec_of(container, image)`` is the comparable view: the image by ID (a tag moves; an ID is a
rollback target), command and entrypoint, the environment and labels the operator set (the image's
own defaults are left out: the daemon merges them in again at create), mounts, published ports,
restart policy, network, user, working directory, capabilities, ulimits. ``create_body(...)`` is
the ``POST /containers/create`` body that recreates the container from another image with the rest
of the frozen document unchanged. ``spec_diff`` names what differs; ``redact_spec`` hides secret
values (environment names that look like secrets, and every secret value the manifest knows).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy
import re

from ansible_collections.mtproxy.cutover.plugins.module_utils._proxy.argv import REDACTED, redact_text

# Environment names whose values are secrets (the official image's SECRET and TAG among them).
SECRET_ENV_NAME = re.compile(r'SECRET|TAG|PASS|TOKEN|KEY|PWD', re.IGNORECASE)
# What owns a container so that a recreate outside it would be undone or leave a stale record.
COMPOSE_LABEL_PREFIX = 'com.docker.compose.'
COMPOSE_PROJECT_LABEL = 'com.docker.compose.project'
COMPOSE_SERVICE_LABEL = 'com.docker.compose.service'
# Labels the collection puts on containers it starts itself (pre-warm); never part of a spec.
CUTOVER_LABEL = 'io.mtproxy-cutover.role'
# HostConfig keys compared by the spec (the rest is carried over verbatim by create_body). Binds are
# compared as ``mounts``: a recreate names an anonymous volume in Binds to keep it (create_body).
HOST_FIELDS = ('PortBindings', 'RestartPolicy', 'NetworkMode', 'CapAdd', 'CapDrop', 'Ulimits',
               'Privileged', 'ReadonlyRootfs', 'Tmpfs', 'ExtraHosts', 'Dns', 'PidMode', 'IpcMode',
               'SecurityOpt', 'LogConfig', 'Memory', 'NanoCpus', 'CpuShares')
# Config keys of a container that come from the engine, not from the operator.
ENGINE_CONFIG_KEYS = ('Hostname', 'Image')


def env_dict(entries):
    """{'NAME': 'value'} of Config.Env (['NAME=value', ...]); a bare NAME maps to None."""
    out = {}
    for entry in entries or []:
        name, sep, value = entry.partition('=')
        out[name] = value if sep else None
    return out


def env_list(mapping):
    return ['%s=%s' % (k, v) if v is not None else k for k, v in sorted(mapping.items())]


def own_items(container_map, image_map):
    """Entries the container has that the image does not give it (same name and value)."""
    image_map = image_map or {}
    return dict((k, v) for k, v in (container_map or {}).items() if k not in image_map or image_map[k] != v)


def mounts_of(container):
    """Sorted [{type, source, destination, rw}] of the container's mounts (volume name or host path)."""
    out = []
    for mount in container.get('Mounts') or []:
        kind = mount.get('Type') or ('volume' if mount.get('Name') else 'bind')
        source = mount.get('Name') if kind == 'volume' else mount.get('Source')
        out.append({'type': kind, 'source': source, 'destination': mount.get('Destination'),
                    'rw': bool(mount.get('RW', True))})
    return sorted(out, key=lambda m: (m['destination'] or '', m['source'] or ''))


def spec_of(container, image):
    """The comparable spec of ``container`` (inspect document) created from ``image`` (inspect)."""
    config = container.get('Config') or {}
    image_config = (image or {}).get('Config') or {}
    host = container.get('HostConfig') or {}
    return {
        'name': (container.get('Name') or '').lstrip('/'),
        'image_id': container.get('Image'),
        'image_ref': config.get('Image'),
        'entrypoint': config.get('Entrypoint'),
        'cmd': config.get('Cmd'),
        'env': own_items(env_dict(config.get('Env')), env_dict(image_config.get('Env'))),
        'labels': dict((k, v) for k, v in own_items(config.get('Labels'), image_config.get('Labels')).items()
                       if k != CUTOVER_LABEL),
        'user': config.get('User') or '',
        'working_dir': config.get('WorkingDir') or '',
        'mounts': mounts_of(container),
        'host': dict((k, host.get(k)) for k in HOST_FIELDS),
    }


# Spec fields that identify the image; every other field must survive a flip unchanged. The
# reference (a tag) is shown, never compared: a tag moves, the ID is the identity.
IMAGE_FIELDS = ('image_id', 'image_ref')


def spec_diff(frozen, live, skip=IMAGE_FIELDS):
    """[{field, frozen, live}] of the spec fields that differ (values as given: redact before showing)."""
    drift = []
    for key in sorted(set(frozen) | set(live)):
        if key in skip or key == 'image_ref':
            continue
        before, after = frozen.get(key), live.get(key)
        if key in ('env', 'labels', 'host'):
            for sub in sorted(set(before or {}) | set(after or {})):
                if (before or {}).get(sub) != (after or {}).get(sub):
                    drift.append({'field': 'container.%s.%s' % (key, sub),
                                  'frozen': (before or {}).get(sub), 'live': (after or {}).get(sub)})
        elif before != after:
            drift.append({'field': 'container.%s' % key, 'frozen': before, 'live': after})
    return drift


def redact_value(field, value, secrets):
    if value is None:
        return None
    if field.startswith('container.env.') and SECRET_ENV_NAME.search(field[len('container.env.'):]):
        return REDACTED
    return scrub(value, secrets)


def scrub(value, secrets):
    if isinstance(value, dict):
        return dict((k, scrub(v, secrets)) for k, v in value.items())
    if isinstance(value, list):
        return [scrub(v, secrets) for v in value]
    if isinstance(value, str):
        return redact_text(value, secrets)
    return value


def redact_diff(drift, secrets):
    return [dict(entry, frozen=redact_value(entry['field'], entry['frozen'], secrets),
                 live=redact_value(entry['field'], entry['live'], secrets)) for entry in drift]


def redact_spec(spec, secrets):
    """Copy of a spec safe to leave the host."""
    out = scrub(copy.deepcopy(spec), secrets)
    out['env'] = dict((k, REDACTED if SECRET_ENV_NAME.search(k) and v is not None else v)
                      for k, v in (out.get('env') or {}).items())
    return out


def env_secrets(spec):
    """Values of secret-looking environment entries (to redact wherever they appear)."""
    values = []
    for name, value in (spec.get('env') or {}).items():
        if value and SECRET_ENV_NAME.search(name):
            values.extend(v for v in re.split(r'[,\s]+', value) if len(v) >= 8)
            values.append(value)
    return values


def image_reference(image, preferred=None):
    """What a new container's Config.Image says: ``preferred`` (a tag) when it names this image now,
    else the image's first tag, else its ID (``docker ps`` then shows a tag operators know)."""
    tags = image.get('RepoTags') or []
    if preferred and preferred in tags:
        return preferred
    return tags[0] if tags else image.get('Id')


def create_body(container, image, target_image_id, own_env=None, own_labels=None, reference=None):
    """Engine ``POST /containers/create`` body recreating ``container`` from ``target_image_id``.

    Everything the operator set is kept: command, entrypoint, user, working directory, their
    environment and labels (``own_env``/``own_labels``, default: from ``container`` minus ``image``'s
    defaults; the daemon merges the new image's defaults in), HostConfig verbatim (mounts, ports,
    restart policy, network, capabilities, limits), the networks' aliases and addresses.
    ``reference``: the tag to write as Config.Image (it must name ``target_image_id``; see
    ``image_reference``), else the ID. Anonymous
    volumes are carried over by name, so their data stays with the new container.
    """
    config = copy.deepcopy(container.get('Config') or {})
    image_config = (image or {}).get('Config') or {}
    host = copy.deepcopy(container.get('HostConfig') or {})
    body = dict((k, v) for k, v in config.items() if k not in ENGINE_CONFIG_KEYS)
    if config.get('Hostname') and not (container.get('Id') or '').startswith(config['Hostname']) \
            and not (host.get('NetworkMode') or '').startswith('container:'):
        body['Hostname'] = config['Hostname']  # set by the operator (--hostname), not the engine's default
    env = own_env if own_env is not None else own_items(env_dict(config.get('Env')), env_dict(image_config.get('Env')))
    body['Env'] = env_list(env)
    labels = own_labels if own_labels is not None else own_items(config.get('Labels'), image_config.get('Labels'))
    body['Labels'] = dict((k, v) for k, v in labels.items() if k != CUTOVER_LABEL)
    body['Image'] = reference or target_image_id
    exposed = own_items(config.get('ExposedPorts'), image_config.get('ExposedPorts'))
    # The engine refuses exposed ports with another container's network (`--network container:X`).
    body['ExposedPorts'] = exposed if exposed and not (host.get('NetworkMode') or '').startswith('container:') else None
    declared = set((host.get('Binds') and [b.split(':')[1] for b in host['Binds'] if ':' in b]) or [])
    declared |= set(m.get('Target') for m in host.get('Mounts') or [])
    for mount in container.get('Mounts') or []:
        if mount.get('Type') == 'volume' and mount.get('Name') and mount.get('Destination') not in declared:
            # An anonymous volume (image VOLUME without -v): reuse it instead of getting an empty one.
            host['Binds'] = list(host.get('Binds') or []) + ['%s:%s%s' % (
                mount['Name'], mount['Destination'], '' if mount.get('RW', True) else ':ro')]
    body['HostConfig'] = host
    networks = ((container.get('NetworkSettings') or {}).get('Networks') or {})
    mode = host.get('NetworkMode') or 'default'
    if mode not in ('default', 'bridge', 'host', 'none') and not mode.startswith('container:') and mode in networks:
        endpoint = networks[mode] or {}
        short_id = (container.get('Id') or '')[:12]
        body['NetworkingConfig'] = {'EndpointsConfig': {mode: {
            'IPAMConfig': endpoint.get('IPAMConfig'),
            'Aliases': [a for a in endpoint.get('Aliases') or [] if a != short_id] or None}}}
    return body


def owner_refusal(container, unit_texts=()):
    """Why the container must not be recreated by the collection (its owner would undo it), or None.

    ``unit_texts``: [(path, text)] of systemd unit files that mention the container's name.
    """
    name = (container.get('Name') or '').lstrip('/')
    labels = (container.get('Config') or {}).get('Labels') or {}
    if labels.get(COMPOSE_PROJECT_LABEL):
        return ('container %s belongs to docker compose project %r (service %r): a container recreated outside '
                'compose is replaced again by the next `docker compose up`. Set the service\'s image to the Go '
                'image in the compose file and run `docker compose up -d %s` instead, or recreate the container '
                'without compose first' % (name, labels[COMPOSE_PROJECT_LABEL], labels.get(COMPOSE_SERVICE_LABEL),
                                           labels.get(COMPOSE_SERVICE_LABEL) or ''))
    for path, text in unit_texts:
        if re.search(r'docker\s+(container\s+)?(run|create|start)', text or '') and \
                re.search(r'--name[= ]%s(\s|$)' % re.escape(name), text or ''):
            return ('container %s is run by the systemd unit %s (`docker run --name %s ...`): the unit would start '
                    'the C image again on its next restart. Change the image argument in that unit (a drop-in) '
                    'and restart it, or run the container without the unit' % (name, path, name))
    return None
