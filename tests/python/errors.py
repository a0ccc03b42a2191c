"""Error records with the real Python DistKV 0.63.3 library and CLI, and
ours: errors recorded by DistKV's own `ErrorRoot` are dumped alike by both
command lines (list and dict mode, details, traces, filters), and one
resolved by our CLI is resolved for DistKV's.

Usage: DISTKV_BIN=OUR_DISTKV python errors.py PORT
(exit status 0 = every check passed)
"""

import os
import subprocess
import sys
import tempfile

import anyio
from distkv.client import open_client
from distkv.errors import ErrorRoot
from moat.util import P

import harness
from harness import check, cli

PORT = int(sys.argv[1])
OURS = os.environ["DISTKV_BIN"]


def ours(cfg, *args, rc=0):
    """Our `distkv -c CFG client ARGS…`, as `harness.cli`."""
    p = subprocess.run([OURS, "-c", cfg, "client", *args], capture_output=True, text=True, timeout=60)
    check(p.returncode == rc, f"ours: client {' '.join(args)}: rc {p.returncode} != {rc}; stderr: {p.stderr}")
    return p.stdout, p.stderr


async def record():
    """Two problems, as a DistKV program records them."""
    async with open_client(connect={"host": "127.0.0.1", "port": PORT}) as c:
        e = await ErrorRoot.as_handler(c)
        try:
            raise ValueError("x")
        except ValueError as exc:
            await e.record_error("run", P("a.b"), exc=exc, data={"x": 1}, message="bad {x}", severity=2)
        await e.record_error("compile", P("c"), comment="hmm")


def main():
    with tempfile.NamedTemporaryFile("w", suffix=".cfg", delete=False) as f:
        f.write(f"connect:\n  host: 127.0.0.1\n  port: {PORT}\n")
        cfg = f.name
    anyio.run(record)
    for args in (
        ["error", "dump"],
        ["error", "dump", "-v"],
        ["error", "dump", "-vv"],
        ["error", "dump", "-d", "x"],
        ["error", "dump", "-d", "x", "-s", "run", "-v"],
        ["error", "dump", "-a", "-p", "a"],
        ["error", "dump", "-r"],
    ):
        py, _ = cli(cfg, *args)
        us, _ = ours(cfg, *args)
        check(py == us, f"{args}: DistKV printed\n{py}ours\n{us}")
    # `-m`: whole items; DistKV's YAML shows `path` and `syspath` (one
    # object) as an anchor and an alias, and its request `seq`.
    out, _ = ours(cfg, "-m", "error", "dump", "-s", "run")
    check(out.startswith("- chain:\n") and "\n  value:\n" in out, out)
    out, _ = ours(cfg, "error", "dump", "-s", "run")
    check("trace" not in out and "subsystem: run\n" in out, out)
    syspath = [l.split("!P ")[1] for l in out.splitlines() if "syspath" in l][0]
    out, _ = ours(cfg, "error", "resolve", syspath)
    check(out == "", out)
    py, _ = cli(cfg, "error", "dump", "-r")
    us, _ = ours(cfg, "error", "dump", "-r")
    check(py == us and "resolved: true\n" in py, f"DistKV printed\n{py}ours\n{us}")
    _, err = cli(cfg, "error", "resolve", syspath)
    check(err == "Already resolved.\n", err)
    _, err = ours(cfg, "error", "resolve", syspath)
    check(err == "Already resolved.\n", err)
    print(f"errors.py: {harness.checks} checks passed")


main()
