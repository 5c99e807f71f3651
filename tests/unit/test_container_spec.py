# -*- coding: utf-8 -*-
"""The container method's pure parts: spec, comparison, redaction, the recreate body, owners."""

from __future__ import absolute_import, division, print_function

import copy

from ansible_collections.mtproxy.cutover.plugins.module_utils._proxy import container_spec as ct
from ansible_collections.mtproxy.cutover.plugins.module_utils._proxy import manifest as mf
from ansible_collections.mtproxy.cutover.plugins.module_utils._runtime.container import prewarm_body
from ansible_collections.mtproxy.cutover.plugins.module_utils._host.docker_api import demultiplex

SECRET = 'dd0123456789abcdef0123456789abcd'
C_ID = 'sha256:' + 'c' * 64
GO_ID = 'sha256:' + 'a' * 64

# Shapes as the Engine API returns them for `docker run -d --name proxy1 -v proxy-config:/data
# -e SECRET=... -e WORKERS=1 --restart unless-stopped IMAGE` (image with ENV PATH, EXPOSE 443,
# VOLUME /cache and a label of its own).
IMAGE = {'Id': C_ID, 'RepoTags': ['telegrammessenger/proxy:latest'],
         'Config': {'Env': ['PATH=/usr/local/sbin:/usr/bin'], 'Labels': {'org.opencontainers.image.version': '1'},
                    'ExposedPorts': {'443/tcp': {}}}}
CONTAINER = {
    'Id': '4f1c2d3e4b5a' + '0' * 52,
    'Name': '/proxy1',
    'Image': C_ID,
    'State': {'Running': True, 'Pid': 4242},
    'Config': {'Hostname': '4f1c2d3e4b5a', 'Image': 'telegrammessenger/proxy:latest',
               'Env': ['SECRET=' + SECRET, 'WORKERS=1', 'PATH=/usr/local/sbin:/usr/bin'],
               'Cmd': ['/bin/sh', '-c', '/bin/bash /run.sh'], 'Entrypoint': None, 'User': '', 'WorkingDir': '',
               'Labels': {'org.opencontainers.image.version': '1', 'team': 'edge'},
               'ExposedPorts': {'443/tcp': {}}},
    'HostConfig': {'Binds': ['proxy-config:/data'], 'PortBindings': {'443/tcp': [{'HostIp': '', 'HostPort': '443'}]},
                   'RestartPolicy': {'Name': 'unless-stopped', 'MaximumRetryCount': 0}, 'NetworkMode': 'default'},
    'Mounts': [{'Type': 'volume', 'Name': 'proxy-config', 'Destination': '/data', 'RW': True},
               {'Type': 'volume', 'Name': 'f00d' * 16, 'Destination': '/cache', 'RW': True}],
    'NetworkSettings': {'Networks': {'bridge': {'Aliases': None}}},
}


def test_spec_keeps_what_the_operator_set_and_leaves_the_image_defaults_out():
    spec = ct.spec_of(CONTAINER, IMAGE)
    assert spec['env'] == {'SECRET': SECRET, 'WORKERS': '1'}
    assert spec['labels'] == {'team': 'edge'}
    assert spec['image_id'] == C_ID and spec['cmd'] == ['/bin/sh', '-c', '/bin/bash /run.sh']
    assert [m['destination'] for m in spec['mounts']] == ['/cache', '/data']
    assert spec['host']['RestartPolicy']['Name'] == 'unless-stopped'


def test_spec_diff_names_each_changed_field_and_never_the_image_reference():
    frozen = ct.spec_of(CONTAINER, IMAGE)
    live = copy.deepcopy(CONTAINER)
    live['Config']['Env'] = ['SECRET=' + SECRET, 'WORKERS=2', 'PATH=/usr/local/sbin:/usr/bin']
    live['HostConfig']['RestartPolicy'] = {'Name': 'always', 'MaximumRetryCount': 0}
    live['Config']['Image'] = 'telegrammessenger/proxy:1.2'
    live['Image'] = GO_ID
    fields = [d['field'] for d in ct.spec_diff(frozen, ct.spec_of(live, IMAGE))]
    assert fields == ['container.env.WORKERS', 'container.host.RestartPolicy']
    assert [d['field'] for d in ct.spec_diff(frozen, ct.spec_of(live, IMAGE), skip=())] == [
        'container.env.WORKERS', 'container.host.RestartPolicy', 'container.image_id']
    assert ct.spec_diff(frozen, ct.spec_of(CONTAINER, IMAGE)) == []


def test_secret_environment_never_leaves_the_host():
    frozen = ct.spec_of(CONTAINER, IMAGE)
    live = copy.deepcopy(CONTAINER)
    live['Config']['Env'] = ['SECRET=' + 'ee' * 16, 'WORKERS=1']
    drift = ct.redact_diff(ct.spec_diff(frozen, ct.spec_of(live, IMAGE)), ct.env_secrets(frozen))
    assert drift == [{'field': 'container.env.SECRET', 'frozen': '<redacted>', 'live': '<redacted>'}]
    shown = ct.redact_spec(frozen, ct.env_secrets(frozen))
    assert shown['env'] == {'SECRET': '<redacted>', 'WORKERS': '1'}
    manifest = {'schema': 1, 'argv': ['/usr/local/bin/mtproto-proxy'], 'container': frozen,
                'container_create': {'config': CONTAINER['Config']}}
    redacted = mf.redact_manifest(manifest)
    assert SECRET not in repr(redacted) and 'container_create' not in redacted
    assert SECRET in mf.manifest_secrets(manifest)


def test_create_body_recreates_from_another_image_with_everything_else_kept():
    body = ct.create_body(CONTAINER, IMAGE, GO_ID, reference=None)
    assert body['Image'] == GO_ID
    assert sorted(body['Env']) == ['SECRET=' + SECRET, 'WORKERS=1']  # the new image brings its own PATH
    assert body['Labels'] == {'team': 'edge'}
    assert body['Cmd'] == CONTAINER['Config']['Cmd'] and 'Hostname' not in body  # the engine's default name
    assert body['HostConfig']['PortBindings'] == CONTAINER['HostConfig']['PortBindings']
    # The anonymous /cache volume is reused by name, so its data stays.
    assert body['HostConfig']['Binds'] == ['proxy-config:/data', '%s:/cache' % ('f00d' * 16)]
    assert body['ExposedPorts'] is None  # only the image's own EXPOSE: the new image brings it
    assert CONTAINER['HostConfig']['Binds'] == ['proxy-config:/data']  # the frozen document is not changed
    # The recreated container, as the engine reports it, has the frozen spec (the anonymous volume too).
    recreated = copy.deepcopy(CONTAINER)
    recreated.update(Image=GO_ID, HostConfig=body['HostConfig'])
    assert ct.spec_diff(ct.spec_of(CONTAINER, IMAGE), ct.spec_of(recreated, IMAGE)) == []


def test_create_body_in_another_containers_network_drops_what_the_engine_refuses_there():
    shared = copy.deepcopy(CONTAINER)
    shared['HostConfig']['NetworkMode'] = 'container:pod1'
    shared['Config']['ExposedPorts'] = {'443/tcp': {}, '2398/tcp': {}}
    shared['Config']['Hostname'] = 'proxy-one'
    body = ct.create_body(shared, IMAGE, GO_ID)
    assert body['ExposedPorts'] is None and 'Hostname' not in body


def test_create_body_keeps_a_user_network_alias_and_address():
    custom = copy.deepcopy(CONTAINER)
    custom['HostConfig']['NetworkMode'] = 'edge'
    custom['NetworkSettings']['Networks'] = {'edge': {'Aliases': ['proxy', '4f1c2d3e4b5a'],
                                                      'IPAMConfig': {'IPv4Address': '127.0.9.5'}}}
    body = ct.create_body(custom, IMAGE, GO_ID)
    assert body['NetworkingConfig'] == {'EndpointsConfig': {'edge': {
        'IPAMConfig': {'IPv4Address': '127.0.9.5'}, 'Aliases': ['proxy']}}}


def test_image_reference_prefers_a_tag_that_still_names_the_image():
    assert ct.image_reference(IMAGE, 'telegrammessenger/proxy:latest') == 'telegrammessenger/proxy:latest'
    assert ct.image_reference(IMAGE, 'telegrammessenger/proxy:old') == 'telegrammessenger/proxy:latest'
    assert ct.image_reference({'Id': GO_ID, 'RepoTags': []}, 'x:1') == GO_ID


def test_owner_refusals_name_the_owner_and_the_way_forward():
    composed = copy.deepcopy(CONTAINER)
    composed['Config']['Labels'].update({ct.COMPOSE_PROJECT_LABEL: 'edge', ct.COMPOSE_SERVICE_LABEL: 'mtproxy'})
    message = ct.owner_refusal(composed)
    assert 'compose project' in message and "docker compose up -d mtproxy" in message
    unit = ('/etc/systemd/system/proxy.service',
            '[Service]\nExecStart=/usr/bin/docker run --rm --name proxy1 -p 443:443 telegrammessenger/proxy\n')
    assert 'systemd unit /etc/systemd/system/proxy.service' in ct.owner_refusal(CONTAINER, [unit])
    other = (unit[0], unit[1].replace('--name proxy1', '--name proxy10'))
    assert ct.owner_refusal(CONTAINER, [other]) is None
    assert ct.owner_refusal(CONTAINER) is None


def test_prewarm_body_keeps_the_throwaway_away_from_production():
    body = prewarm_body(ct.create_body(CONTAINER, IMAGE, GO_ID))
    host = body['HostConfig']
    assert host['NetworkMode'] == 'none' and host['PortBindings'] == {}
    assert host['Binds'] is None and host['Mounts'] is None  # contents are copied in instead
    assert host['RestartPolicy'] == {'Name': 'no'}
    assert body['Labels'][ct.CUTOVER_LABEL] == 'prewarm'
    assert body['Env'] == ct.create_body(CONTAINER, IMAGE, GO_ID)['Env']


def test_logs_bodies_are_demultiplexed():
    framed = b'\x01\x00\x00\x00\x00\x00\x00\x06hello\n' + b'\x02\x00\x00\x00\x00\x00\x00\x04err\n'
    assert demultiplex(framed) == 'hello\nerr\n'
    assert demultiplex(b'plain tty output\n') == 'plain tty output\n'
