"""The collection as it is published: licence, galaxy.yml, the tarball, module docs, tool configs,
the supported ansible-core window and what depends on it, READMEs, the changelog, Galaxy's importer."""
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _read(*parts):
    with open(os.path.join(REPO, *parts)) as handle:
        return handle.read()


def test_copying_is_the_full_gpl3_text():
    text = _read("COPYING")
    assert text.lstrip().startswith("GNU GENERAL PUBLIC LICENSE")
    assert "Version 3, 29 June 2007" in text and "END OF TERMS AND CONDITIONS" in text
    assert len(text) > 30000


def test_galaxy_yml_names_no_guessed_place_and_ignores_local_files():
    # No public home of the collection can be verified yet: no URL at all rather than a guessed one.
    galaxy = yaml.safe_load(_read("galaxy.yml"))
    for field in ("repository", "documentation", "issues", "homepage"):
        assert field not in galaxy, field
    assert not re.search(r"https?://", _read("galaxy.yml"))
    assert galaxy["license"] == ["GPL-3.0-or-later"]
    for pattern in (".venv*", ".pytest_cache", ".ansible", ".ci", "artifacts"):
        assert pattern in galaxy["build_ignore"], pattern


def _tracked_tree(dest):
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                           stdout=subprocess.PIPE).stdout.decode().split("\0")
    for name in filter(None, files):
        src = os.path.join(REPO, name)
        if not os.path.isfile(src):
            continue
        target = os.path.join(dest, name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(src, target)


def _build(tree, out):
    """The path of the tarball ansible-galaxy builds from ``tree`` into ``out``."""
    proc = subprocess.run([sys.executable, "-m", "ansible.cli.galaxy", "collection", "build", "--output-path", str(out),
                           str(tree)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout
    (tarball,) = list(out.iterdir())
    return tarball


# What a checkout has besides the collection: local environments, caches, run output, and the test
# harness that runs from a checkout (test hosts, stand-in binaries, pytest and Molecule suites,
# benchmarks, tool pins, the execution environment that needs build/).
NOT_SHIPPED = re.compile(r"^(\.venv|\.pytest_cache|\.ansible|\.ci|\.git|artifacts|build/|tests/output|Makefile$|pytest\.ini$"
                         r"|requirements/|execution-environment\.yml$|extensions/|tests/(bench|hosts|standin|unit|integration"
                         r"|fixtures)/|tests/conftest\.py$|tests/requirements\.yml$|tests/sanity/(run-sanity\.sh|get_pip_offline\.py"
                         r"|harness-ignores\.txt)$)")
ROLES = sorted(os.listdir(os.path.join(REPO, "roles")))


@pytest.fixture(scope="module")
def tarball(tmp_path_factory):
    """The names in the tarball built from the tracked tree of this checkout plus a checkout's junk."""
    if not shutil.which("git"):
        pytest.skip("needs git to list the tree")
    base = tmp_path_factory.mktemp("build")
    tree = base / "tree"
    _tracked_tree(str(tree))
    for junk in (".venv/bin/python", ".venv-sanity-2.16/x", ".venv-core2.21/x", ".pytest_cache/v/cache",
                 ".ansible/collections/x", ".ci/run", "artifacts/demo/report.json", "tests/output/x.log"):
        path = tree / junk
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    with tarfile.open(str(_build(tree, base / "out"))) as archive:
        return [member.name for member in archive.getmembers() if member.isfile()]


def test_built_tarball_ships_the_collection_and_leaves_out_environments_and_the_test_harness(tarball):
    assert [n for n in tarball if NOT_SHIPPED.match(n)] == []
    needed = ["COPYING", "README.md", "CHANGELOG.md", "MANIFEST.json", "FILES.json", "meta/runtime.yml",
              "changelogs/changelog.yaml", "changelogs/config.yaml", "roles/report/templates/report.md.j2",
              "plugins/plugin_utils/report_files.py", "plugins/modules/mtproxy_switch.py", "playbooks/cutover.yml",
              "docs/runbook.md", "tests/config.yml"]
    needed += ["roles/%s/README.md" % role for role in ROLES]
    assert [n for n in needed if n not in tarball] == []
    # What ansible-test sanity reads in an installed collection: its ignore files name only files it has
    # (ansible-test fails its 'ignores' test on an entry for a missing file).
    for name in [n for n in tarball if n.startswith("tests/")]:
        assert name == "tests/config.yml" or re.match(r"^tests/sanity/ignore-2\.\d+\.txt$", name), name
        if name.startswith("tests/sanity/"):
            for line in _read(*name.split("/")).splitlines():
                if line.strip() and not line.startswith("#"):
                    assert line.split()[0] in tarball, line


def _documentation(*parts):
    match = re.search(r'DOCUMENTATION = r(\'\'\'|""")(.*?)\1', _read(*parts), re.S)
    return yaml.safe_load(match.group(2))


def _module_doc(name):
    return _documentation("plugins", "modules", name + ".py")


def _module_attributes(name):
    """The module's attributes with those of this collection's doc fragments it extends (as ansible-doc merges them)."""
    doc = _module_doc(name)
    attributes = {}
    for fragment in doc.get("extends_documentation_fragment") or []:
        if fragment.startswith("mtproxy.cutover."):
            attributes.update(_documentation("plugins", "doc_fragments", fragment.split(".")[-1] + ".py").get("attributes") or {})
    attributes.update(doc.get("attributes") or {})
    return attributes


MODULES = sorted(n[:-3] for n in os.listdir(os.path.join(REPO, "plugins", "modules")) if n.endswith(".py"))


@pytest.mark.parametrize("name", MODULES)
def test_module_requirements_name_python_3(name):
    assert any("Python 3" in r for r in _module_doc(name).get("requirements") or []), name


ACTION_PLUGINS = sorted(n[:-3] for n in os.listdir(os.path.join(REPO, "plugins", "action")) if n.endswith(".py"))


@pytest.mark.parametrize("name", MODULES)
def test_every_module_declares_the_same_attributes(name):
    # community.general style: check_mode, diff_mode, async and platform, each with its support level;
    # the modules that are action plugins also say so (action), and that async is not supported.
    attributes = _module_attributes(name)
    wanted = {"check_mode", "diff_mode", "async", "platform"} | ({"action"} if name in ACTION_PLUGINS else set())
    assert set(attributes) == wanted, sorted(set(attributes) ^ wanted)
    for attribute in attributes.values():
        assert attribute["support"] in ("full", "partial", "none") and attribute["description"], attribute
    assert attributes["platform"]["platforms"] == "posix"
    if name in ACTION_PLUGINS:
        assert attributes["action"]["support"] == "full" and attributes["async"]["support"] == "none"


def test_ansible_lint_runs_plainly_in_a_checkout():
    # `offline: true` keeps ansible-lint from making the collection in this checkout resolvable.
    config = yaml.safe_load(_read(".ansible-lint"))
    assert not config.get("offline")
    assert config["profile"] == "production"


def test_test_requirements_name_the_collections_the_tests_use():
    names = [c["name"] for c in yaml.safe_load(_read("tests", "requirements.yml"))["collections"]]
    assert names == ["community.docker", "ansible.posix"]


def test_execution_environment_is_ansible_builder_3_with_this_collection():
    ee = yaml.safe_load(_read("execution-environment.yml"))
    assert ee["version"] == 3
    collections = ee["dependencies"]["galaxy"]["collections"]
    version = yaml.safe_load(_read("galaxy.yml"))["version"]
    assert [c["name"] for c in collections] == ["/build/_build/collections/mtproxy-cutover-%s.tar.gz" % version]
    assert [f["src"] for f in ee["additional_build_files"]] == ["build/mtproxy-cutover-%s.tar.gz" % version]
    assert ee["dependencies"]["python"] == [] and ee["dependencies"]["system"] == []


# --- the supported ansible-core window, and what depends on it ----------------------------------

def _specifier(text):
    from packaging.specifiers import SpecifierSet  # ansible-core's own dependency

    return SpecifierSet(text)


def _pins(name):
    """{package: version} of requirements/<name>, and its `# python: X.Y` (None if it has none)."""
    pins, python = {}, None
    for line in _read("requirements", name).splitlines():
        if line.startswith("# python: "):
            python = line.split(": ", 1)[1].strip()
        elif "==" in line and not line.startswith("#"):
            package, version = line.split("#")[0].strip().split("==")
            pins[package.split("[")[0]] = version
    return pins, python


CORE_FILES = sorted(n for n in os.listdir(os.path.join(REPO, "requirements")) if re.match(r"^core-2\.\d+\.txt$", n))


def _minor(version):
    return tuple(int(part) for part in version.split(".")[:2])


def test_requires_ansible_is_the_window_of_the_oldest_and_newest_tested_core():
    spec = yaml.safe_load(_read("meta", "runtime.yml"))["requires_ansible"]
    cores = sorted((_pins(name)[0]["ansible-core"] for name in CORE_FILES), key=_minor)
    assert len(cores) == 2, CORE_FILES
    oldest, newest = _minor(cores[0]), _minor(cores[-1])
    assert spec == ">=%d.%d.0,<%d.%d.0" % (oldest + (newest[0], newest[1] + 1)), spec
    # Each pinned core, the main tool set's included, lies inside it.
    tested = cores + [_pins("test.txt")[0]["ansible-core"]]
    assert [v for v in tested if v not in _specifier(spec)] == []
    # Each core venv's Python is one that core runs on (2.16: 3.10-3.12; 2.20 and later: 3.12 and newer).
    pythons = {name: _minor(_pins(name)[1]) for name in CORE_FILES}
    assert pythons == {"core-2.16.txt": (3, 12), "core-2.21.txt": (3, 13)}, pythons


def test_execution_environment_installs_a_core_of_the_window_on_a_python_that_runs_all_of_it():
    ee = yaml.safe_load(_read("execution-environment.yml"))["dependencies"]
    requirement = ee["ansible_core"]["package_pip"]
    assert requirement.startswith("ansible-core")
    assert requirement[len("ansible-core"):] == yaml.safe_load(_read("meta", "runtime.yml"))["requires_ansible"]
    # 3.12: the one Python that both 2.16 (3.10-3.12) and 2.21 (3.12-3.14) run on.
    assert ee["python_interpreter"] == {"package_system": "python3.12", "python_path": "/usr/bin/python3.12"}


def _collections_dir():
    return os.path.join(os.environ.get("MTPROXY_TEST_COLLECTIONS_PATH", os.path.join(REPO, ".venv", "collections")),
                        "ansible_collections")


def test_community_docker_range_is_one_and_admits_the_tested_copy_which_supports_every_core():
    dependency = yaml.safe_load(_read("galaxy.yml"))["dependencies"]["community.docker"]
    tests = {c["name"]: c.get("version") for c in yaml.safe_load(_read("tests", "requirements.yml"))["collections"]}
    assert tests["community.docker"] == dependency
    spec = _specifier(dependency)
    # An upper bound below the first major that refuses the oldest core (5.x: ansible-core >= 2.17).
    assert "5.0.0" not in spec and "4.0.0" in spec
    manifest = os.path.join(_collections_dir(), "community", "docker", "MANIFEST.json")
    if not os.path.exists(manifest):
        pytest.skip("no extracted community.docker (make venv)")
    with open(manifest) as handle:
        assert json.load(handle)["collection_info"]["version"] in spec
    with open(os.path.join(_collections_dir(), "community", "docker", "meta", "runtime.yml")) as handle:
        admitted = _specifier(yaml.safe_load(handle)["requires_ansible"])
    cores = [_pins(name)[0]["ansible-core"] for name in CORE_FILES] + [_pins("test.txt")[0]["ansible-core"]]
    assert [v for v in cores if v not in admitted] == []


# --- documentation of a published collection ------------------------------------------------------

@pytest.mark.parametrize("role", ROLES)
def test_every_role_has_a_readme_naming_its_entry_points_and_where_its_options_are(role):
    path = os.path.join(REPO, "roles", role, "README.md")
    assert os.path.exists(path), "roles/%s/README.md" % role
    text = _read("roles", role, "README.md")
    assert text.startswith("# mtproxy.cutover.%s\n" % role)
    with open(os.path.join(REPO, "roles", role, "meta", "argument_specs.yml")) as handle:
        entry_points = yaml.safe_load(handle)["argument_specs"]
    section = text.split("## Entry points", 1)[1].split("\n## ", 1)[0]
    assert sorted(re.findall(r"^- `([a-z_]+)`", section, re.M)) == sorted(entry_points)
    assert "ansible-doc -t role mtproxy.cutover.%s" % role in text


def test_readme_has_installation_requirements_and_release_notes():
    text = _read("README.md")
    sections = re.findall(r"^## (.+)$", text, re.M)
    for wanted in ("Installation", "Requirements", "Release notes"):
        assert wanted in sections, sections
    requirements = text.split("## Requirements", 1)[1].split("\n## ", 1)[0]
    spec = yaml.safe_load(_read("meta", "runtime.yml"))["requires_ansible"]
    assert spec in requirements and yaml.safe_load(_read("galaxy.yml"))["dependencies"]["community.docker"] in requirements
    assert "3.6" in requirements and "3.13" in requirements
    notes = text.split("## Release notes", 1)[1].split("\n## ", 1)[0]
    assert "CHANGELOG.md" in notes and "`repository`" in notes


def test_changelog_has_the_release_of_galaxy_yml_rendered_to_changelog_md(tmp_path):
    config = yaml.safe_load(_read("changelogs", "config.yaml"))
    assert config["notesdir"] == "fragments"
    changelog = yaml.safe_load(_read("changelogs", "changelog.yaml"))
    assert changelog["ancestor"] is None
    version = yaml.safe_load(_read("galaxy.yml"))["version"]
    assert version in changelog["releases"] and changelog["releases"][version]["changes"]["release_summary"]
    tool = os.path.join(os.path.dirname(sys.executable), "antsibull-changelog")
    if not os.path.exists(tool):
        pytest.skip("antsibull-changelog is not installed (requirements/test.txt)")
    proc = subprocess.run([tool, "lint"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, check=False)
    assert proc.returncode == 0 and proc.stdout.strip() == "", proc.stdout
    # CHANGELOG.md is what `antsibull-changelog generate` renders from changelog.yaml now.
    shutil.copytree(os.path.join(REPO, "changelogs"), str(tmp_path / "changelogs"))
    shutil.copy(os.path.join(REPO, "galaxy.yml"), str(tmp_path))
    proc = subprocess.run([tool, "generate"], cwd=str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, check=False)
    assert proc.returncode == 0, proc.stdout
    assert (tmp_path / "CHANGELOG.md").read_text() == _read("CHANGELOG.md")


# --- what Galaxy says of the tarball --------------------------------------------------------------

IMPORTER = os.environ.get("MTPROXY_GALAXY_IMPORTER")  # a Python with galaxy-importer (make importer)


def _import(python, tarball):
    """(rc, output) of galaxy-importer on ``tarball``, its venv's tools (ansible-doc) on PATH."""
    env = dict(os.environ, PATH=os.pathsep.join([os.path.dirname(python), os.environ.get("PATH", "")]),
               # ansible-lint runs in `make lint` on the same content; here it would add a minute.
               GALAXY_IMPORTER_RUN_ANSIBLE_LINT="False")
    proc = subprocess.run([python, "-m", "galaxy_importer.main", str(tarball)], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True, env=env, timeout=600, check=False)
    return proc.returncode, proc.stdout


@pytest.mark.skipif(not IMPORTER, reason="MTPROXY_GALAXY_IMPORTER is not set (make importer)")
@pytest.mark.skipif(not shutil.which("git"), reason="needs git to list the tree")
def test_galaxy_importer_accepts_the_tarball_once_it_names_the_repository(tmp_path):
    tree = tmp_path / "tree"
    _tracked_tree(str(tree))
    rc, output = _import(IMPORTER, _build(tree, tmp_path / "as-is"))
    # As it is, the one refusal is the missing repository (README.md, Release notes).
    assert rc != 0 and "Invalid collection metadata. 'repository' is required" in output, output
    # Given a repository (a test value, never shipped), everything else passes: metadata, docs of every
    # plugin and role (ansible-doc), a README per role, the changelog.
    with open(str(tree / "galaxy.yml"), "a") as handle:
        handle.write("repository: https://example.invalid/mtproxy.cutover\n")
    rc, output = _import(IMPORTER, _build(tree, tmp_path / "with-repository"))
    assert rc == 0 and "Importer processing completed successfully" in output, output
    problems = [line for line in output.splitlines() if re.match(r"^(WARNING|ERROR)", line)]
    assert problems == [], problems
    # The execution environment definition is valid for ansible-builder 3 (installed with the importer).
    builder = os.path.join(os.path.dirname(IMPORTER), "ansible-builder")
    proc = subprocess.run([builder, "create", "-f", os.path.join(REPO, "execution-environment.yml"), "-c",
                           str(tmp_path / "ee")], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout
