"""The image_platform_problem filter: a Go image for another platform than the container host's."""
import pytest

from ansible_collections.mtproxy.cutover.plugins.filter.image_platform_problem import image_platform_problem

IMAGE_ID = 'sha256:' + '3' * 64


def image(arch, image_os='linux', variant=None):
    info = {'Id': IMAGE_ID, 'Os': image_os, 'Architecture': arch}
    if variant:
        info['Variant'] = variant
    return info


@pytest.mark.parametrize('machine, arch', [
    ('x86_64', 'amd64'), ('aarch64', 'arm64'), ('armv7l', 'arm'), ('ppc64le', 'ppc64le'), ('s390x', 's390x'),
    # docker info may print the GOARCH itself
    ('amd64', 'amd64'), ('arm64', 'arm64'),
])
def test_a_linux_image_of_the_hosts_architecture_passes(machine, arch):
    assert image_platform_problem(image(arch), machine) == ''


def test_an_arm64_image_on_an_x86_64_host_is_refused_naming_both_and_the_way_forward():
    problem = image_platform_problem(image('arm64', variant='v8'), 'x86_64')
    assert IMAGE_ID in problem
    assert 'built for linux/arm64/v8' in problem
    assert 'this host runs x86_64 (linux/amd64)' in problem
    assert 'exec format error' in problem
    assert 'docker build --platform linux/amd64' in problem
    assert 'mtproxy_cutover_go_image_id' in problem


def test_an_amd64_image_on_an_arm64_host_is_refused():
    problem = image_platform_problem(image('amd64'), 'aarch64')
    assert 'built for linux/amd64' in problem and 'this host runs aarch64 (linux/arm64)' in problem


def test_a_32_bit_image_on_a_64_bit_host_of_the_same_family_is_refused():
    # The ELF check refuses it too unless the C binary is of that machine: the host's kernel may lack the
    # 32-bit compat mode, and nothing here says it has it.
    assert 'built for linux/386' in image_platform_problem(image('386'), 'x86_64')


def test_a_windows_image_is_refused_whatever_its_architecture():
    problem = image_platform_problem(image('amd64', image_os='windows'), 'x86_64')
    assert 'built for windows/amd64' in problem


@pytest.mark.parametrize('info, machine', [
    (image(''), 'x86_64'),           # an image that names no architecture
    ({'Id': IMAGE_ID}, 'x86_64'),    # nor an Os
    (image('arm64'), 'mystery9000'),  # a machine without a known GOARCH
    (image('arm64'), ''),
])
def test_only_what_is_known_is_refused(info, machine):
    assert image_platform_problem(info, machine) == ''
