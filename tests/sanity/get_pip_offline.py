"""Stand-in for ansible-test's pip bootstrap script, which lives on a host CI cannot reach.

ansible-test runs this file as __main__ with pip-style options, the pinned `pip==X` requirement and
`--no-setuptools`/`--no-wheel`. We install pip X from its wheel, downloaded beforehand from PyPI into
this directory by tests/sanity/run-sanity.sh (each Python ansible-test tests may pin another pip).
"""
import glob
import os
import sys

wheel_dir = os.path.dirname(os.path.abspath(__file__))
pinned = [a[len("pip=="):] for a in sys.argv[1:] if a.startswith("pip==")]
pattern = "pip-%s-*.whl" % (pinned[0] if pinned else "*")
wheels = sorted(glob.glob(os.path.join(wheel_dir, pattern)))
if not wheels:
    sys.exit("no %s next to %s; run tests/sanity/run-sanity.sh" % (pattern, __file__))
wheel = wheels[-1]
sys.path.insert(0, wheel)

dropped = ("--no-setuptools", "--no-wheel")
options = [a for a in sys.argv[1:] if a not in dropped and not a.startswith("pip==")]

from pip._internal.cli.main import main  # noqa: E402  (importable only after the wheel is on sys.path)

sys.exit(main(["install", "--upgrade", "--force-reinstall"] + options + [wheel]))
