"""Make the checkout importable as ansible_collections.mtproxy.cutover for every test."""
import hashlib
import os
import sys
import tempfile

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _collections_root():
    # One root per checkout: two checkouts testing at once must not run each other's code.
    checkout = hashlib.sha256(REPO_ROOT.encode()).hexdigest()[:12]
    root = os.path.join(tempfile.gettempdir(), "mtproxy-cutover-collections-%d-%s" % (os.getuid(), checkout))
    link_dir = os.path.join(root, "ansible_collections", "mtproxy")
    link = os.path.join(link_dir, "cutover")
    os.makedirs(link_dir, exist_ok=True)
    if os.path.realpath(link) != REPO_ROOT:
        tmp_link = link + ".%d" % os.getpid()
        os.symlink(REPO_ROOT, tmp_link)
        os.replace(tmp_link, link)
    return root


COLLECTIONS_ROOT = _collections_root()
if COLLECTIONS_ROOT not in sys.path:
    sys.path.insert(0, COLLECTIONS_ROOT)

# The test-host tools in tests/standin import each other (mtproxy_wire) as they do on a host.
STANDIN_DIR = os.path.join(REPO_ROOT, "tests", "standin")
if STANDIN_DIR not in sys.path:
    sys.path.insert(0, STANDIN_DIR)


def _run_command(args, data=None, binary_data=False, environ_update=None, check_rc=False, expand_user_and_vars=True,
                 cwd=None):
    """What AnsibleModule.run_command does for the host-side code, for the tests that run it without a module."""
    import subprocess  # pylint: disable=import-outside-toplevel
    env = dict(os.environ, **(environ_update or {}))
    done = subprocess.run(list(args), input=data.encode("utf-8") if isinstance(data, str) else data,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, check=False, cwd=cwd)
    return done.returncode, done.stdout.decode("utf-8", "replace"), done.stderr.decode("utf-8", "replace")


from ansible_collections.mtproxy.cutover.plugins.module_utils._host import process as _process  # noqa: E402

_process.use_runner(_run_command)
