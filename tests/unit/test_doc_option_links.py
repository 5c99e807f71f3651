"""Every O(option) in the documentation names an option of the plugin or role entry point it is in.

ansible-doc and the docs site render O(x) as a link to option x; a link to an option that does not
exist (the preflight's argument spec once linked O(settings)) is a broken link and a wrong pointer.
O(fqcn#type:option) links into another plugin and is not checked here.
"""
import ast
import glob
import os
import re

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OPTION_LINK = re.compile(r"\bO\(([^)#]+)\)")


def _doc_strings(path):
    """{name: text} of the DOCUMENTATION and RETURN strings of a plugin file."""
    strings = {}
    with open(path) as handle:
        tree = ast.parse(handle.read())
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            for inner in node.body:
                strings.update(_assigned_string(inner))
        strings.update(_assigned_string(node))
    return strings


def _assigned_string(node):
    if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
        return {target.id: node.value.value for target in node.targets if isinstance(target, ast.Name)}
    return {}


def _fragment_options():
    options = {}
    for path in glob.glob(os.path.join(REPO, "plugins", "doc_fragments", "*.py")):
        doc = yaml.safe_load(_doc_strings(path)["DOCUMENTATION"])
        options["mtproxy.cutover." + os.path.basename(path)[:-3]] = doc.get("options") or {}
    return options


def _links(data):
    """Every O(...) target in the strings of a YAML structure."""
    if isinstance(data, str):
        return OPTION_LINK.findall(data)
    if isinstance(data, dict):
        return [link for value in data.values() for link in _links(value)]
    if isinstance(data, list):
        return [link for value in data for link in _links(value)]
    return []


def _exists(link, options):
    """O(a.b=value): option a with suboption b; a value after = is not part of the name."""
    name = link.split("=", 1)[0].strip()
    level = options
    for part in name.split("."):
        part = part.split("[", 1)[0]
        if not isinstance(level, dict) or part not in level:
            return False
        level = level[part].get("suboptions") or level[part].get("options") or {}
    return True


def _plugin_files():
    return sorted(path for path in glob.glob(os.path.join(REPO, "plugins", "*", "*.py"))
                  if "DOCUMENTATION" in _doc_strings(path) and "/doc_fragments/" not in path)


@pytest.mark.parametrize("path", _plugin_files(), ids=lambda path: os.path.relpath(path, REPO))
def test_option_links_of_a_plugin_name_its_options(path):
    strings = _doc_strings(path)
    doc = yaml.safe_load(strings["DOCUMENTATION"])
    options = dict(doc.get("options") or {})
    fragments = _fragment_options()
    for fragment in doc.get("extends_documentation_fragment") or []:
        options.update(fragments[fragment])
    links = _links(doc) + _links(yaml.safe_load(strings.get("RETURN") or "{}"))
    assert [link for link in links if not _exists(link, options)] == []


def test_option_links_of_each_role_entry_point_name_its_options():
    broken = []
    for path in sorted(glob.glob(os.path.join(REPO, "roles", "*", "meta", "argument_specs.yml"))):
        with open(path) as handle:
            specs = yaml.safe_load(handle)["argument_specs"]
        for entry, spec in specs.items():
            options = spec.get("options") or {}
            broken += ["%s %s: O(%s)" % (os.path.relpath(path, REPO), entry, link)
                       for link in _links(spec) if not _exists(link, options)]
    assert broken == []


def test_a_link_to_a_missing_option_is_found():
    spec = {"description": ["Reads O(settings) and O(run_dir)."], "options": {"run_dir": {"type": "str"}}}
    assert [link for link in _links(spec) if not _exists(link, spec["options"])] == ["settings"]
    assert _exists("target=go", {"target": {}}) and _exists("a.b", {"a": {"suboptions": {"b": {}}}})
