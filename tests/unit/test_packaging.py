"""The collection as it is published: licence, galaxy.yml, the tarball, module docs, tool configs."""
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


@pytest.mark.skipif(not shutil.which("git"), reason="needs git to list the tree")
def test_built_tarball_leaves_out_environments_caches_and_artifacts(tmp_path):
    tree = tmp_path / "tree"
    _tracked_tree(str(tree))
    # What a working checkout has besides the collection.
    for junk in (".venv/bin/python", ".venv-sanity/x", ".pytest_cache/v/cache", ".ansible/collections/x",
                 ".ci/run", "artifacts/demo/report.json", "tests/output/x.log"):
        path = tree / junk
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "ansible.cli.galaxy", "collection", "build", "--output-path", str(out),
                           str(tree)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout
    (tarball,) = list(out.iterdir())
    with tarfile.open(str(tarball)) as archive:
        names = archive.getnames()
    bad = [n for n in names if re.match(r"^(\.venv|\.pytest_cache|\.ansible/|\.ansible$|\.ci|artifacts|tests/output)", n)]
    assert bad == []
    for needed in ("COPYING", "README.md", "galaxy.yml", "MANIFEST.json", "meta/runtime.yml", "changelogs/changelog.yaml",
                   "roles/report/templates/report.md.j2", "plugins/plugin_utils/report_files.py",
                   "execution-environment.yml"):
        assert needed in names or needed == "galaxy.yml", needed


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
    assert any("mtproxy-cutover" in c["name"] or c["name"] == "mtproxy.cutover" for c in collections)
    assert ee["dependencies"]["python"] == [] and ee["dependencies"]["system"] == []


def test_changelog_is_kept_with_antsibull_changelog():
    assert not os.path.exists(os.path.join(REPO, "CHANGELOG.md")) or "antsibull" in _read("CHANGELOG.md")
    config = yaml.safe_load(_read("changelogs", "config.yaml"))
    assert config["notesdir"] == "fragments"
    assert yaml.safe_load(_read("changelogs", "changelog.yaml"))["ancestor"] is None
    tool = shutil.which("antsibull-changelog") or os.path.join(os.path.dirname(sys.executable), "antsibull-changelog")
    if not os.path.exists(tool):
        pytest.skip("antsibull-changelog is not installed (requirements/test.txt)")
    proc = subprocess.run([tool, "lint"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, check=False)
    assert proc.returncode == 0 and proc.stdout.strip() == "", proc.stdout
