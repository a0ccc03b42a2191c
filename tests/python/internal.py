"""`internal dump|get|enum` and `data PATH update` with the real Python
DistKV 0.63.3 CLI and ours against one node: the same output (tocks
aside), and an update file written by our `dump yaml` read by DistKV's
`data update`.

Usage: DISTKV_BIN=OUR_DISTKV python internal.py PORT
(exit status 0 = every check passed)
"""

import os
import re
import subprocess
import sys
import tempfile

import harness
from harness import check, cli

PORT = int(sys.argv[1])
OURS = os.environ["DISTKV_BIN"]


def ours(cfg, *args, rc=0, stdin=None, top=()):
    """Our `distkv -c CFG [TOP…] client ARGS…`, as `harness.cli`."""
    argv = [OURS, "-c", cfg, *top, *(["client", *args] if args else [])]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=60, input=stdin)
    check(p.returncode == rc, f"ours: {argv}: rc {p.returncode} != {rc}; stderr: {p.stderr}")
    return p.stdout, p.stderr


def py_verbose(cfg, *args):
    """DistKV's CLI with `-v` before `client`."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    p = subprocess.run([harness.CLI, "-c", cfg, "-v", "client", *args], capture_output=True, text=True, env=env, timeout=60)
    check(p.returncode == 0, p.stderr)
    return p.stdout


def untocked(text):
    return re.sub(r"(?m)^tock: \d+$", "tock: *", text)


def main():
    with tempfile.NamedTemporaryFile("w", suffix=".cfg", delete=False) as f:
        f.write(f"connect:\n  host: 127.0.0.1\n  port: {PORT}\n")
        cfg = f.name
    ours(cfg, "data", "a", "set", "-e", ":", "1")
    ours(cfg, "data", "a.b", "set", "-e", ":", "2")
    ours(cfg, "data", "a.b", "set", "-e", ":", "3")
    ours(cfg, "internal", "deleter", "rust1")
    for args in (
        ["internal", "enum", "rust1"],
        ["internal", "enum", "rust1", "-n", "2"],
        ["-m", "internal", "enum", "rust1", "-c"],
        ["internal", "get", "rust1", "4"],
        ["-m", "internal", "get", "rust1", "4"],
        ["internal", "dump", ":"],
        ["internal", "dump", "actor"],
    ):
        py, _ = cli(cfg, *args)
        us, _ = ours(cfg, *args)
        check(py and untocked(py) == untocked(us), f"{args}: DistKV printed\n{py}ours\n{us}")
    py = py_verbose(cfg, "internal", "enum", "rust1")
    us, _ = ours(cfg, "internal", "enum", "rust1", top=("-v",))
    check(py == us and " a.b\n" in us, f"-v enum: DistKV printed\n{py}ours\n{us}")

    with tempfile.TemporaryDirectory() as d:
        mp = os.path.join(d, "u.mp")
        ours(cfg, stdin="path: !P x.y\nvalue: 1\n---\npath: !P z\nvalue: !bin hi\n", top=("dump", "yaml", mp))
        cli(cfg, "data", "py", "update", "-i", mp)
        ours(cfg, "data", "rs", "update", "-i", mp)
        py, _ = cli(cfg, "data", "py", "get", "-rd_")
        us, _ = ours(cfg, "data", "rs", "get", "-rd_")
        check(py == us == "x:\n  y:\n    _: 1\nz:\n  _: !bin hi\n", f"update: DistKV's\n{py}ours\n{us}")
    print(f"internal.py: {harness.checks} checks passed")


main()
