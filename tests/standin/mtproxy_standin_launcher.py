#!/usr/bin/python3 -S
"""The stand-in as a binary: runs mtproxy_standin from /opt/mtproxy-standin, byte-compiled there.

Installed at a binary's path (its basename picks the flavour, as for the stand-in itself). Python
compiles a script on every start but imports a module from its cached byte code, and -S skips the
site packages the stand-in does not use: both keep the start, which every flip window measures,
closer to a real binary's.
"""
import os
import sys

sys.path.insert(0, os.environ.get("MTPROXY_STANDIN_DIR", "/opt/mtproxy-standin"))
import mtproxy_standin  # noqa: E402

mtproxy_standin.main(sys.argv)
