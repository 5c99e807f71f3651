"""Stand-in for ansible-test's pip bootstrap script, which lives on a host CI cannot reach.

ansible-test runs this file as __main__ with pip-style options, the pinned `pip==X` requirement and
`--no-setuptools`/`--no-wheel`. We install pip from a wheel downloaded beforehand from PyPI instead.
"""
import glob
import os
import sys

wheel_dir = os.path.dirname(os.path.abspath(__file__))
wheels = sorted(glob.glob(os.path.join(wheel_dir, "pip-*.whl")))
if not wheels:
    sys.exit("no pip wheel next to %s; run tests/sanity/run-sanity.sh" % __file__)
wheel = wheels[-1]
sys.path.insert(0, wheel)

dropped = ("--no-setuptools", "--no-wheel")
options = [a for a in sys.argv[1:] if a not in dropped and not a.startswith("pip==")]

from pip._internal.cli.main import main  # noqa: E402  (importable only after the wheel is on sys.path)

sys.exit(main(["install", "--upgrade", "--force-reinstall"] + options + [wheel]))
