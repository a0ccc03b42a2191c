"""What the Python compatibility scripts share: counted checks and the
DistKV 0.63.3 command line of the interpreter's own venv."""

import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(sys.executable))
CLI = os.path.join(HERE, "distkv")
checks = 0


def check(cond, what):
    """Fails the script with `what` unless `cond` holds; counts the check."""
    global checks
    if not cond:
        print("FAILED:", what, file=sys.stderr)
        sys.exit(1)
    checks += 1


def cli(cfg, *args, rc=0):
    """Runs `distkv -c CFG client ARGS…`, checks its exit status, and
    returns its stdout and stderr."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    p = subprocess.run([CLI, "-c", cfg, "client", *args], capture_output=True, text=True, env=env, timeout=60)
    check(p.returncode == rc, f"distkv client {' '.join(args)}: rc {p.returncode} != {rc}; stderr: {p.stderr}")
    return p.stdout, p.stderr
