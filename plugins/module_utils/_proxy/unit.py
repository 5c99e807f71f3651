# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""systemd side of the freeze: `systemctl show` output, ExecStart text, environment, drop-ins.

Limitations (documented, checked by tests): only the [Service] section's ExecStart is read;
specifiers are resolved for the unit-name family (%n %N %p %i %I %j %J %f), the service manager's
user (%u %U %g %G %h %s: root for the system manager), fixed system directories (%t %S %C %L %E %T
%V), the credentials directory %d, plus %% and, given the host's facts (host_specifiers()), %H %l %m
%b %v %o %w %W %B %A %M and, given the fragment, %y %Y; any other specifier raises UnitError so a
freeze refuses rather than guessing. A bare ';' (several commands in one line) raises as well.

``systemctl show`` prints some settings in another form than the unit file (systemd.exec(5)):
``WorkingDirectory=-/x`` as ``!/x``, ``WorkingDirectory=~`` as ``~``, ``EnvironmentFile=-/x`` as
``/x (ignore_errors=yes)``, ``ExecStart=`` as ``{ path=... ; argv[]=... ; ... }`` with its prefixes
turned into fields; the readers here turn each back into what systemd uses.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import platform
import pwd
import re
import socket

# Our own drop-in (written by mtproxy_switch). It is never part of the "vendor" unit identity.
CUTOVER_DROPIN = "99-mtproxy-cutover.conf"

SHOW_PROPERTIES = (
    "LoadState", "ActiveState", "SubState", "MainPID", "ExecMainStartTimestampMonotonic",
    "FragmentPath", "DropInPaths", "User", "Group", "WorkingDirectory", "Environment",
    "EnvironmentFiles", "NeedDaemonReload", "Type", "Names",
)

# systemctl show prints these once per entry instead of joining them on one line.
_REPEATED_KEYS = ("EnvironmentFiles",)

EXEC_PREFIXES = "-@:+!|"


class UnitError(ValueError):
    """The unit cannot be understood well enough to be frozen safely."""


def unit_name(service):
    """'MTProxy' -> 'MTProxy.service'; names with a unit suffix are kept."""
    if re.search(r"\.(service|socket|target|timer|mount|path|scope|slice)$", service):
        return service
    return service + ".service"


def parse_show(text):
    """`systemctl show -p ...` output -> {key: value}; EnvironmentFiles -> list of raw values."""
    result = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        if key in _REPEATED_KEYS:
            result.setdefault(key, []).append(value)
        else:
            result[key] = value
    for key in _REPEATED_KEYS:
        result.setdefault(key, [])
    return result


def main_pid(show):
    try:
        return int(show.get("MainPID") or "0")
    except ValueError:
        return 0


def drop_in_paths(show):
    """DropInPaths is space separated, already in the order systemd applies them."""
    return (show.get("DropInPaths") or "").split()


def is_cutover_dropin(path):
    return os.path.basename(path) == CUTOVER_DROPIN


def vendor_drop_ins(paths):
    return [p for p in paths if not is_cutover_dropin(p)]


def parse_environment_files(values):
    """EnvironmentFiles entries 'PATH (ignore_errors=yes|no)' -> [{path, optional}]."""
    if isinstance(values, str):
        values = [values] if values else []
    files = []
    for raw in values:
        match = re.match(r"^(.*?)\s+\(ignore_errors=(yes|no)\)$", raw)
        if match:
            files.append({"path": match.group(1), "optional": match.group(2) == "yes"})
        elif raw:
            files.append({"path": raw, "optional": False})
    return files


_C_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
              "s": " ", "\\": "\\", '"': '"', "'": "'", ";": ";"}


def _unescape_at(text, i):
    """Decode the backslash escape starting at text[i] == '\\'. Returns (chars, next index)."""
    if i + 1 >= len(text):
        return "\\", i + 1
    c = text[i + 1]
    if c in _C_ESCAPES:
        return _C_ESCAPES[c], i + 2
    if c == "x" and re.match(r"[0-9a-fA-F]{2}", text[i + 2:i + 4]):
        return chr(int(text[i + 2:i + 4], 16)), i + 4
    if c == "u" and re.match(r"[0-9a-fA-F]{4}", text[i + 2:i + 6]):
        return chr(int(text[i + 2:i + 6], 16)), i + 6
    if c == "U" and re.match(r"[0-9a-fA-F]{8}", text[i + 2:i + 10]):
        return chr(int(text[i + 2:i + 10], 16)), i + 10
    if re.match(r"[0-7]{3}", text[i + 1:i + 4]):
        return chr(int(text[i + 1:i + 4], 8)), i + 4
    # Relaxed: an unknown escape stays as written (systemd warns and keeps it).
    return "\\" + c, i + 2


def split_words(text):
    """systemd word splitting: whitespace separated, '...' and "..." group (anywhere in a word),
    C-style backslash escapes inside and outside quotes. Returns [(word, was_quoted)]."""
    words = []
    i = 0
    n = len(text)
    while True:
        while i < n and text[i] in " \t\n\r":
            i += 1
        if i >= n:
            return words
        chars = []
        quoted = False
        quote = None
        while i < n:
            c = text[i]
            if quote:
                if c == quote:
                    quote = None
                    i += 1
                elif c == "\\":
                    decoded, i = _unescape_at(text, i)
                    chars.append(decoded)
                else:
                    chars.append(c)
                    i += 1
            elif c in "\"'":
                quote = c
                quoted = True
                i += 1
            elif c == "\\":
                decoded, i = _unescape_at(text, i)
                chars.append(decoded)
                if decoded == ";":
                    quoted = True  # '\;' is a literal semicolon, not a separator
            elif c in " \t\n\r":
                break
            else:
                chars.append(c)
                i += 1
        if quote:
            raise UnitError("unbalanced quotes in: %s" % text)
        words.append(("".join(chars), quoted))


def split_exec_start(text):
    """ExecStart text -> list of words (quotes and escapes resolved, prefixes and specifiers not)."""
    return [word for word, _quoted in split_words(text)]


def _specifier_table(name, host=None):
    name = name or ""
    prefix_and_instance, _dot, _suffix = name.rpartition(".")
    base = prefix_and_instance or name
    prefix, at, instance = base.partition("@")
    table = {
        "n": name, "N": base, "p": prefix, "P": prefix, "i": instance, "I": instance,
        "j": prefix.rsplit("-", 1)[-1], "J": prefix.rsplit("-", 1)[-1],
        "f": "/" + (instance or prefix), "t": "/run", "S": "/var/lib", "C": "/var/cache",
        "L": "/var/log", "E": "/etc", "T": "/tmp", "V": "/var/tmp", "%": "%",
        # The user running the service manager: root for the system manager, whatever User= says.
        "h": "/root", "u": "root", "U": "0", "g": "root", "G": "0", "s": "/bin/sh",
        "d": "/run/credentials/" + name,
    }
    table.update(dict((k, v) for k, v in (host or {}).items() if v is not None))
    return table


# os-release keys behind the specifiers systemd.unit(5) takes from it.
_OS_RELEASE_SPECIFIERS = (("o", "ID"), ("w", "VERSION_ID"), ("W", "VARIANT_ID"), ("B", "BUILD_ID"),
                          ("A", "IMAGE_VERSION"), ("M", "IMAGE_ID"))


def _first_line(path):
    try:
        with open(path) as handle:
            return handle.readline().strip()
    except (IOError, OSError):
        return None


def host_specifiers(fragment_path=None):
    """The host-dependent specifiers as systemd resolves them on this host (None: unknown)."""
    hostname = socket.gethostname()
    boot_id = _first_line("/proc/sys/kernel/random/boot_id")
    table = {"H": hostname, "l": hostname.split(".", 1)[0], "m": _first_line("/etc/machine-id"),
             "b": boot_id.replace("-", "") if boot_id else None, "v": platform.release()}
    os_release = {}
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        try:
            with open(path) as handle:
                os_release = parse_environment_file(handle.read())
            break
        except (IOError, OSError):
            continue
    for letter, key in _OS_RELEASE_SPECIFIERS:
        table[letter] = os_release.get(key, "")
    if fragment_path:
        table.update(y=fragment_path, Y=os.path.dirname(fragment_path))
    return table


def resolve_specifiers(word, name, host=None):
    table = _specifier_table(name, host)
    out = []
    i = 0
    while i < len(word):
        c = word[i]
        if c != "%":
            out.append(c)
            i += 1
            continue
        if i + 1 >= len(word) or word[i + 1] not in table:
            raise UnitError("unsupported systemd specifier %s in ExecStart" % word[i:i + 2])
        out.append(table[word[i + 1]])
        i += 2
    return "".join(out)


def expand_environment(words, environment):
    """systemd ExecStart variable expansion on split words.

    '${NAME}' is replaced inside a word; a word that is exactly '$NAME' becomes the value split
    on whitespace (no words when unset or empty); '$$' is a literal '$'.
    """
    out = []
    for word in words:
        whole = re.match(r"^\$([A-Za-z_][A-Za-z0-9_]*)$", word)
        if whole:
            out.extend((environment.get(whole.group(1)) or "").split())
            continue
        out.append(re.sub(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}",
                          lambda m: "$" if m.group(0) == "$$" else environment.get(m.group(1), ""),
                          word))
    return out


def parse_exec_command(text, name=None, environment=None, host=None):
    """One ExecStart value -> {path, argv, prefixes} as systemd would execute it.

    argv is what /proc/<pid>/cmdline shows: with the '@' prefix the second word is argv[0].
    ``host``: host_specifiers() for the specifiers that depend on the host.
    """
    pairs = split_words(text)
    if not pairs:
        raise UnitError("empty ExecStart")
    first, first_quoted = pairs[0]
    prefixes = ""
    if not first_quoted:
        while first and first[0] in EXEC_PREFIXES:
            prefixes += first[0]
            first = first[1:]
    pairs[0] = (first, first_quoted)
    if any(word == ";" and not quoted for word, quoted in pairs):
        raise UnitError("several commands in one ExecStart line are not supported")
    words = [resolve_specifiers(word, name, host) for word, _quoted in pairs]
    if ":" not in prefixes:
        words = expand_environment(words, environment or {})
    if not words or not words[0]:
        raise UnitError("ExecStart has no executable")
    path = resolve_exec_path(words[0])
    argv = words[1:] if "@" in prefixes else words
    if not argv:
        raise UnitError("ExecStart with '@' needs an argv[0] word")
    return {"path": path, "argv": argv, "prefixes": prefixes}


def _logical_lines(text):
    """Unit file lines with backslash continuations joined and comments dropped."""
    pending = None
    for raw in text.splitlines():
        line = raw.strip()
        if pending is not None and line[:1] in ("#", ";"):
            continue  # comment lines inside a continuation are skipped by systemd
        if pending is None and (not line or line[:1] in ("#", ";")):
            continue
        if line.endswith("\\"):
            pending = (pending + " " if pending is not None else "") + line[:-1]
            continue
        if pending is not None:
            line = pending + " " + line
            pending = None
        yield line
    if pending is not None:
        yield pending


def exec_start_entries(unit_texts):
    """[(path, text)] in systemd load order -> list of (path, raw value) ExecStart assignments
    still in effect (an empty 'ExecStart=' resets the list)."""
    entries = []
    for path, text in unit_texts:
        section = None
        for line in _logical_lines(text):
            if line.startswith("[") and line.endswith("]"):
                section = line[1:-1].strip()
                continue
            key, sep, value = line.partition("=")
            if not sep or section != "Service" or key.strip() != "ExecStart":
                continue
            value = value.strip()
            if value:
                entries.append((path, value))
            else:
                entries = []
    return entries


def service_setting(unit_texts, key):
    """The value of a single-valued [Service] setting (``User``, ``Group``) after every file of
    ``unit_texts`` (the last assignment wins, an empty one resets it), or None."""
    value = None
    for _path, text in unit_texts:
        section = None
        for line in _logical_lines(text):
            if line.startswith("[") and line.endswith("]"):
                section = line[1:-1].strip()
                continue
            name, sep, assigned = line.partition("=")
            if sep and section == "Service" and name.strip() == key:
                value = assigned.strip() or None
    return value


def exec_start_from_unit_texts(unit_texts):
    """The single effective ExecStart raw text (a service that runs the proxy has exactly one)."""
    entries = exec_start_entries(unit_texts)
    if len(entries) != 1:
        raise UnitError("expected exactly one effective ExecStart, found %d" % len(entries))
    return entries[0][1]


def exec_start_source(unit_texts):
    """Path of the file the effective ExecStart comes from (None if not exactly one)."""
    entries = exec_start_entries(unit_texts)
    return entries[0][0] if len(entries) == 1 else None


def exec_start_winner(unit_texts):
    """Path of the last file whose ExecStart assignment is in effect (None when none is)."""
    entries = exec_start_entries(unit_texts)
    return entries[-1][0] if entries else None


def drop_in_order(paths, new_path):
    """DropInPaths with ``new_path`` added where systemd applies it.

    systemd collects the drop-ins of every directory and applies them sorted by file name (a file
    of the same name in a directory of higher priority masks the others), whatever directory they
    are in: ``override.conf`` (from ``systemctl edit``) comes after ``99-mtproxy-cutover.conf``.
    """
    name = os.path.basename(new_path)
    kept = [p for p in paths if os.path.basename(p) != name]
    return sorted(kept + [new_path], key=os.path.basename)


def dropin_winner(unit_texts, dropin_path, dropin_text):
    """The file whose ExecStart systemd would run once ``dropin_path`` holds ``dropin_text``.

    unit_texts: [(path, text)], the fragment first, then the drop-ins. Returns the winner's path,
    which is ``dropin_path`` when the drop-in takes effect.
    """
    fragment, drop_ins = unit_texts[0], dict(unit_texts[1:])
    drop_ins[dropin_path] = dropin_text
    ordered = drop_in_order([p for p in drop_ins if p != dropin_path], dropin_path)
    return exec_start_winner([fragment] + [(p, drop_ins[p]) for p in ordered])


# systemd's fixed search path for an ExecStart program given without a directory (v239 and later).
EXEC_SEARCH_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")


def resolve_exec_path(path, is_executable=None):
    """An ExecStart program as systemd runs it: a bare name is looked up in EXEC_SEARCH_PATH."""
    if not path or "/" in path:
        return path
    is_executable = is_executable or (lambda p: os.path.isfile(p) and os.access(p, os.X_OK))
    for directory in EXEC_SEARCH_PATH:
        candidate = os.path.join(directory, path)
        if is_executable(candidate):
            return candidate
    return path


def parse_show_exec(value):
    """``systemctl show -p ExecStart`` value -> [{path, argv_text, ignore_errors}], one per command.

    systemd 252 prints ``{ path=/x ; argv[]=/x -p 1 ; ignore_errors=no ; start_time=... }``: the
    program as it will run (prefixes applied, specifiers resolved) and its words joined by blanks
    without quoting, so only ``path`` is exact.
    """
    commands = []
    for block in re.findall(r"\{ (.*?) \}", value or ""):
        fields = {}
        for part in block.split(" ; "):
            key, sep, val = part.partition("=")
            if sep:
                fields[key.strip()] = val
        if "path" in fields:
            commands.append({"path": fields["path"], "argv_text": fields.get("argv[]", ""),
                             "ignore_errors": fields.get("ignore_errors") == "yes"
                             or "ignore-failure" in fields.get("flags", "")})
    return commands


def home_directory(user):
    """Home directory of ``user`` (a name or a numeric id; root when empty), None if unknown."""
    try:
        if not user:
            return pwd.getpwuid(0).pw_dir
        if user.isdigit():
            return pwd.getpwuid(int(user)).pw_dir
        return pwd.getpwnam(user).pw_dir
    except KeyError:
        return None


def show_working_directory(value, user=None, home_of=home_directory):
    """``WorkingDirectory`` as systemctl show prints it -> (path or None, missing_ok).

    ``WorkingDirectory=-/x`` is printed ``!/x`` (a missing directory is no error), ``~`` stands for
    the home directory of ``User=`` (root's without one).
    """
    value = value or ""
    missing_ok = value.startswith("!")
    if missing_ok:
        value = value[1:]
    if value == "~":
        return home_of(user) or None, missing_ok
    return value or None, missing_ok


def parse_show_environment(value):
    """`Environment=` as printed by systemctl show ("A=1 2" quoted, '\\$' escaped) -> dict."""
    env = {}
    for word, _quoted in split_words(value or ""):
        key, sep, val = word.partition("=")
        if sep:
            env[key] = val.replace("\\$", "$")
    return env


def parse_environment_file(text):
    """EnvironmentFile= content -> dict (KEY=VALUE lines, # and ; comments, quotes, continuations)."""
    env = {}
    for line in _logical_lines(text):
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
            continue
        value = value.strip()
        if value[:1] in ("'", '"'):
            words = split_words(value)
            value = words[0][0] if words else ""
        env[key] = value
    return env


_QUOTE_NEEDED = re.compile(r"[\s\"'\\;]")


def quote_exec_word(word):
    """Quote one argv word for an ExecStart line so split+specifiers+expansion give it back."""
    word = word.replace("%", "%%").replace("$", "$$")
    if word and not _QUOTE_NEEDED.search(word) and word[0] not in EXEC_PREFIXES:
        return word
    escaped = word.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    return '"%s"' % escaped


def render_exec_start(argv):
    return " ".join(quote_exec_word(word) for word in argv)


def render_cutover_dropin(argv, comment=None):
    """Text of CUTOVER_DROPIN: reset ExecStart and run argv."""
    lines = []
    if comment:
        lines.extend("# " + part for part in comment.splitlines())
    lines.extend(["[Service]", "ExecStart=", "ExecStart=" + render_exec_start(argv), ""])
    return "\n".join(lines)


def systemctl_show(run_command, service, properties=SHOW_PROPERTIES, systemctl="systemctl"):
    """Run `systemctl show` through run_command(list) -> (rc, out, err); returns parse_show()."""
    cmd = [systemctl, "show"]
    for prop in properties:
        cmd.extend(["-p", prop])
    cmd.extend(["--", unit_name(service)])
    rc, out, err = run_command(cmd)
    if rc != 0:
        raise UnitError("systemctl show %s failed (rc=%s): %s" % (unit_name(service), rc, (err or "").strip()))
    return parse_show(out)
