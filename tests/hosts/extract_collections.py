"""Extract selected collections from the `ansible` bundle wheel: Galaxy is not reachable here.

usage: extract_collections.py WHEEL DEST NAMESPACE/NAME [NAMESPACE/NAME ...]
"""
import sys
import zipfile


def main(argv):
    wheel, dest, wanted = argv[1], argv[2], argv[3:]
    prefixes = tuple("ansible_collections/%s/" % name for name in wanted)
    with zipfile.ZipFile(wheel) as bundle:
        members = [n for n in bundle.namelist() if n.startswith(prefixes)]
        missing = [p for p in prefixes if not any(m.startswith(p) for m in members)]
        if missing:
            sys.exit("not in %s: %s" % (wheel, ", ".join(missing)))
        bundle.extractall(dest, members)


if __name__ == "__main__":
    main(sys.argv)
