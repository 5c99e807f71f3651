#!/usr/bin/python3 -S
"""The stand-in as the later Go port (skrashevich/MTProxy master), installed at a binary's path.

That build rejects C flags it does not define: with the C command line it prints "flag provided
but not defined: -p" and its usage and exits 2 (measured). The incompatible_binary scenario stages
this file as the Go release when no such real build is given (MTPROXY_GO_INCOMPATIBLE_BINARY).
Runs mtproxy_standin from /opt/mtproxy-standin, byte-compiled there, as mtproxy_standin_launcher.py does.
"""
import os
import sys

sys.path.insert(0, os.environ.get("MTPROXY_STANDIN_DIR", "/opt/mtproxy-standin"))
import mtproxy_standin  # noqa: E402

mtproxy_standin.main(sys.argv, variant="go-master")
