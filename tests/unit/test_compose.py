# -*- coding: utf-8 -*-
"""The compose runtime's pure parts: the service name, compose's labels, the default files each compose
version loads, the collection's override file, the refusals, the compared spec; and the runtime choice."""

from __future__ import absolute_import, division, print_function

import copy

import pytest

from ansible_collections.mtproxy.cutover.plugins.module_utils._errors import CutoverError, SwitchError
from ansible_collections.mtproxy.cutover.plugins.module_utils._host import compose_cli
from ansible_collections.mtproxy.cutover.plugins.module_utils._proxy import compose_project as cp
from ansible_collections.mtproxy.cutover.plugins.module_utils._runtime.choice import ALL_METHODS, runtime_class
from ansible_collections.mtproxy.cutover.plugins.module_utils._runtime.compose import ComposeRuntime
from ansible_collections.mtproxy.cutover.plugins.module_utils._runtime.container import ContainerRuntime, prewarm_body
from ansible_collections.mtproxy.cutover.plugins.module_utils._state import StateDir

C_ID = 'sha256:' + 'c' * 64
GO_ID = 'sha256:' + 'a' * 64
WD = '/srv/mtproxy'


def container(files='/srv/mtproxy/compose.yaml', version='2.26.1', image='mtproxy/c:1', **extra):
    labels = {cp.PROJECT: 'mtproxy', cp.SERVICE: 'proxy', cp.WORKING_DIR: WD, cp.CONFIG_FILES: files,
              cp.CONFIG_HASH: 'h' * 64, cp.VERSION: version, cp.ONEOFF: 'False',
              'com.docker.compose.container-number': '1', 'owner': 'ops'}
    labels.update(extra)
    return {'Id': '1' * 64, 'Name': '/mtproxy-proxy-1', 'Image': C_ID,
            'Config': {'Image': image, 'Labels': labels, 'Env': ['SECRET=' + 'd' * 32], 'Cmd': ['/run.sh']},
            'HostConfig': {'NetworkMode': 'container:pod'}, 'Mounts': []}


def test_the_service_is_named_project_slash_service():
    assert cp.split_service('mtproxy/proxy') == ('mtproxy', 'proxy')
    for bad in ('proxy', 'mtproxy-proxy-1', 'a/b/c', '/proxy', 'Mtproxy/proxy', ''):
        with pytest.raises(ValueError, match='<project>/<service>'):
            cp.split_service(bad)


def test_config_files_of_both_versions_are_absolute():
    assert cp.config_files(container('/srv/mtproxy/compose.yaml,/srv/mtproxy/compose.override.yaml')) == [
        WD + '/compose.yaml', WD + '/compose.override.yaml']
    # compose v1 records the names relative to the working directory
    assert cp.config_files(container('docker-compose.yml,docker-compose.override.yml', '1.29.2')) == [
        WD + '/docker-compose.yml', WD + '/docker-compose.override.yml']


@pytest.mark.parametrize('existing, major, main, overrides', [
    (['compose.yaml', 'docker-compose.yml'], 2, 'compose.yaml', []),
    (['compose.yaml', 'docker-compose.yml'], 1, 'docker-compose.yml', []),
    (['docker-compose.yml', 'docker-compose.override.yml'], 2, 'docker-compose.yml', ['docker-compose.override.yml']),
    (['compose.yaml', 'docker-compose.override.yml', 'compose.override.yaml'], 2, 'compose.yaml',
     ['compose.override.yaml', 'docker-compose.override.yml']),
    (['README'], 2, None, []),
])
def test_default_files_follow_each_versions_order(existing, major, main, overrides):
    found_main, found_overrides = cp.default_files(WD, existing, major)
    assert found_main == (WD + '/' + main if main else None)
    assert found_overrides == [WD + '/' + name for name in overrides]


def test_the_override_is_named_after_the_projects_file_and_sets_only_the_image():
    assert cp.override_name(WD + '/compose.yaml') == WD + '/compose.override.yaml'
    assert cp.override_name(WD + '/docker-compose.yml') == WD + '/docker-compose.override.yml'
    # every such name is a default override name of both versions
    for main in ('compose.yaml', 'compose.yml', 'docker-compose.yml', 'docker-compose.yaml'):
        name = cp.override_name(main)
        assert name in cp.OVERRIDE_FILES[1] and name in cp.OVERRIDE_FILES[2]
    text = cp.override_text('mtproxy', 'proxy', GO_ID)
    assert cp.is_ours(text) and not cp.is_ours('services: {}\n')
    body = [line for line in text.splitlines() if not line.startswith('#')]
    assert body == ['services:', '  "proxy":', '    image: "%s"' % GO_ID]


def test_a_project_started_with_its_default_files_is_accepted():
    assert cp.invocation_refusal('mtproxy/proxy', container(), ['compose.yaml'], 2) is None
    # on Go, compose loaded the collection's override too
    ours = WD + '/compose.override.yaml'
    flipped = container(WD + '/compose.yaml,' + ours)
    assert cp.invocation_refusal('mtproxy/proxy', flipped, ['compose.yaml', 'compose.override.yaml'], 2, ours) is None


@pytest.mark.parametrize('labelled, existing, kind', [
    ('/srv/mtproxy/prod.yml', ['compose.yaml', 'prod.yml'], 'compose_explicit_files'),
    ('/srv/mtproxy/compose.yaml,/srv/mtproxy/extra.yml', ['compose.yaml', 'extra.yml'], 'compose_explicit_files'),
    ('/srv/mtproxy/compose.yaml', ['compose.yaml', 'compose.override.yaml'], 'compose_override_present'),
    ('/srv/mtproxy/compose.yaml', ['prod.yml'], 'compose_explicit_files'),
])
def test_invocations_that_would_not_load_the_override_are_refused(labelled, existing, kind):
    refusal = cp.invocation_refusal('mtproxy/proxy', container(labelled), existing, 2,
                                    override_texts={WD + '/compose.override.yaml': 'services:\n  proxy:\n    image: x\n'})
    assert refusal is not None and refusal[0] == kind
    assert 'mtproxy/proxy' in refusal[1] and 'Way forward' in refusal[1]
    if kind == 'compose_override_present':
        assert 'it sets an image' in refusal[1]


def test_a_service_built_by_compose_and_replicas_are_refused():
    for image in ('mtproxy-proxy', 'mtproxy_proxy', 'mtproxy-proxy:latest'):
        refusal = cp.invocation_refusal('mtproxy/proxy', container(image=image), ['compose.yaml'], 2)
        assert refusal[0] == 'compose_build'
    assert cp.replicas_refusal('mtproxy/proxy', [container()]) is None
    two = [container(), dict(container(), Name='/mtproxy-proxy-2')]
    kind, message = cp.replicas_refusal('mtproxy/proxy', two)
    assert kind == 'compose_replicas' and 'mtproxy-proxy-1, mtproxy-proxy-2' in message


def test_the_compared_spec_leaves_out_what_compose_rewrites_on_a_recreate():
    before = cp.spec_of(container(), {})
    after_doc = container(WD + '/compose.yaml,' + WD + '/compose.override.yaml', **{
        cp.CONFIG_HASH: 'g' * 64, 'com.docker.compose.replace': '2' * 64, 'com.docker.compose.image': GO_ID})
    after_doc['Image'] = GO_ID
    after = cp.spec_of(after_doc, {})
    assert before['labels'] == after['labels'] and 'owner' in before['labels']
    assert before['compose'] == {'project': 'mtproxy', 'service': 'proxy', 'working_dir': WD}
    moved = cp.spec_of(container(owner='someone-else'), {})
    assert moved['labels'] != before['labels']


def test_a_pre_warm_container_is_no_container_of_the_project():
    body = prewarm_body({'Labels': dict(cp.labels(container())), 'HostConfig': {}})
    assert not [k for k in body['Labels'] if k.startswith('com.docker.compose.')]
    assert body['Labels']['owner'] == 'ops'


def test_compose_commands_are_found_by_their_version():
    answers = {('docker', 'compose', 'version', '--short'): (0, '2.26.1-4\n', ''),
               ('docker-compose', 'version', '--short'): (0, '1.29.2\n', '')}

    def run(argv, timeout=None, **_options):
        return answers.get(tuple(argv), (127, '', 'not found'))
    found = compose_cli.installed(run=run)
    assert [(c.argv, c.major) for c in found] == [(['docker', 'compose'], 2), (['docker-compose'], 1)]
    assert found[0].up_args('proxy') == ['up', '-d', '--no-deps', '--no-build', '--pull', 'never', 'proxy']
    assert found[1].up_args('proxy') == ['up', '-d', '--no-deps', '--no-build', 'proxy']
    assert found[0].args('mtproxy', 'config') == ['docker', 'compose', '--ansi', 'never', '-p', 'mtproxy', 'config']
    assert compose_cli.Compose(['docker', 'compose'], '2.1.0', '/run/podman.sock').env == {
        'DOCKER_HOST': 'unix:///run/podman.sock'}


def test_compose_is_a_method_of_its_own_runtime(tmp_path):
    assert 'compose' in ALL_METHODS
    manifest = {'argv': ['/c'], 'method': 'compose', 'service': 'mtproxy/proxy'}
    assert runtime_class(manifest, None) is ComposeRuntime
    assert runtime_class(None, {'current': 'go', 'method': 'compose'}) is ComposeRuntime
    with pytest.raises(CutoverError, match='method=container contradicts') as info:
        runtime_class(manifest, None, 'container')
    assert info.value.details['refused'] == 'method_mismatch'
    assert runtime_class({'argv': ['/c'], 'method': 'container'}, None) is ContainerRuntime
    runtime = ComposeRuntime(StateDir(str(tmp_path), 'mtproxy/proxy'), None, None, docker=object(), clis=[])
    assert (runtime.kind, runtime.release_kind, runtime.supports_bridge) == ('compose', 'image', False)
    with pytest.raises(CutoverError, match='<project>/<service>'):
        ComposeRuntime(StateDir(str(tmp_path), 'proxy1'), None, None, docker=object(), clis=[])
    with pytest.raises(SwitchError, match='contradicts') as info:
        runtime.plan('go', GO_ID, 'container')
    assert info.value.details['refused'] == 'method_mismatch'


class FakeCli:
    def __init__(self, major, digest):
        self.major, self.digest, self.command, self.version, self.argv = major, digest, 'docker compose', '2.26.1', ['x']

    def config_hash(self, working_dir, project, service):
        return self.digest, None


def test_the_compose_that_made_the_container_is_the_one_used(tmp_path):
    store = StateDir(str(tmp_path), 'mtproxy/proxy')
    made = container()
    runtime = ComposeRuntime(store, None, None, docker=object(), clis=[FakeCli(1, 'h' * 64), FakeCli(2, 'h' * 64)])
    cli, digest = runtime.matching_command(made, SwitchError)
    assert cli.major == 2 and digest == 'h' * 64
    runtime = ComposeRuntime(store, None, None, docker=object(), clis=[FakeCli(2, 'x' * 64)])
    with pytest.raises(SwitchError, match='no longer make the running container') as info:
        runtime.matching_command(made, SwitchError)
    assert info.value.details['refused'] == 'compose_config_changed'
    runtime = ComposeRuntime(store, None, None, docker=object(), clis=[FakeCli(1, 'h' * 64)])
    with pytest.raises(SwitchError, match='made by compose 2.26.1') as info:
        runtime.matching_command(made, SwitchError)
    assert info.value.details['refused'] == 'compose_version'
    assert copy.deepcopy(made) == made
