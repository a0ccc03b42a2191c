"""DistKV's own Python type and codec code, set with the real Python DistKV
0.63.3 CLI (`type set -s`, `codec set -e/-d`) on a node built with the
`python` feature and `server.scripts.lang: python`: the migration case.
Values are checked and converted as DistKV does it, a definition whose
code does not compile is refused, and code that never ends is stopped
while the node keeps serving.

Usage: python pycode.py PORT   (exit status 0 = every check passed)
"""

import os
import sys
import tempfile

import harness
from harness import check, cli

PORT = int(sys.argv[1])

INT = 'if not isinstance(value, int):\n    raise ValueError("not an int")\n'
POS = 'if value < 0:\n    raise ValueError("neg")\n'
HANG = "if value == 13:\n    while True:\n        pass\n" + POS
DECODE = "if not isinstance(value, str):\n    raise ValueError('not a string')\nreturn int(value)\n"
ENCODE = "return str(value)\n"


def main():
    tmp = tempfile.mkdtemp()
    cfg = os.path.join(tmp, "distkv.cfg")
    with open(cfg, "w") as f:
        f.write(f"connect:\n  host: 127.0.0.1\n  port: {PORT}\n")

    def script(name, text):
        path = os.path.join(tmp, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    # Types: `int`, `int.pos` matched at `pos.#`.
    cli(cfg, "type", "set", "-s", script("int.py", INT), "-g", "0", "-g", "2", "-b", "'x'", "-b", "1.5", "int")
    cli(cfg, "type", "set", "-s", script("pos.py", POS), "-g", "0", "-g", "5", "-b", "-1", "int.pos")
    cli(cfg, "type", "match", "-t", "int.pos", "pos.#")
    cli(cfg, "data", "pos.a", "set", "-e", ":", "10")
    _, err = cli(cfg, "data", "pos.a", "set", "-e", ":", "-3", rc=1)
    check("ServerError: ValueError('neg')" in err, f"pos refuses -3: {err}")
    _, err = cli(cfg, "data", "pos.a", "set", "-v", ":", "x", rc=1)
    check("ServerError: ValueError('not an int')" in err, f"int refuses 'x': {err}")
    out, _ = cli(cfg, "data", "pos.a", "get")
    check(out.strip() == "10", f"refused writes changed nothing: {out!r}")

    # Definitions: examples are checked, code must compile.
    _, err = cli(cfg, "type", "set", "-s", script("pos2.py", POS), "-g", "0", "-g", "-5", "-b", "-1", "int.p2", rc=1)
    check("ServerError: ValueError('failed on good value -5')" in err, f"bad good example: {err}")
    _, err = cli(cfg, "type", "set", "-s", script("bad.py", "if value <:\n"), "-g", "0", "-g", "5", "-b", "-1", "int.p3", rc=1)
    check("SyntaxError(" in err and "is not a Python script" in err, f"bad code: {err}")

    # Code that never ends for 13 is stopped; the node keeps serving.
    cli(cfg, "type", "set", "-s", script("hang.py", HANG), "-g", "1", "-g", "2", "-b", "-1", "hang")
    cli(cfg, "type", "match", "-t", "hang", "hang.#")
    _, err = cli(cfg, "data", "hang.a", "set", "-e", ":", "13", rc=1)
    check("RuntimeError(" in err and "the code ran too" in err, f"endless code is stopped: {err}")
    cli(cfg, "data", "hang.a", "set", "-e", ":", "5")
    out, _ = cli(cfg, "data", "hang.a", "get")
    check(out.strip() == "5", f"the node keeps serving: {out!r}")

    # DistKV's convert acceptance: codec `int`, converter `foo` on `inty.#`.
    cli(cfg, "codec", "set", "-e", script("enc.py", ENCODE), "-d", script("dec.py", DECODE),
        "-i", "'1'", "1", "-o", "2", "'2'", "int")
    _, err = cli(cfg, "codec", "set", "-e", script("enc2.py", ENCODE), "-d", script("dec2.py", "return value\n"),
                 "-i", "'1'", "1", "-o", "2", "'2'", "int2", rc=1)
    check("Decoding at" in err and "'1' got '1', not 1" in err, f"codec tests are run: {err}")
    cli(cfg, "codec", "convert", "foo", "inty.#", "-c", "int")
    cli(cfg, "auth", "-m", "password", "user", "add", "name=con", "password=con-pw")
    cli(cfg, "auth", "-m", "password", "user", "add", "name=boss", "password=boss-pw")
    cli(cfg, "auth", "-m", "password", "user", "param", "con", "conv", "foo")
    cli(cfg, "auth", "-m", "password", "init")
    con = ("-a", "password name=con password=con-pw")
    boss = ("-a", "password name=boss password=boss-pw")
    cli(cfg, *con, "data", "inty.x", "set", "-v", ":", "10")
    out, _ = cli(cfg, *boss, "data", "inty.x", "get")
    check(out.strip() == "10", f"10 is stored: {out!r}")
    out, _ = cli(cfg, *con, "data", "inty.x", "get")
    check(out.strip() == "'10'", f"con reads '10': {out!r}")
    _, err = cli(cfg, *con, "data", "inty.x", "set", "-e", ":", "11", rc=1)
    check("ServerError: ValueError('not a string')" in err, f"decode refuses 11: {err}")
    out, _ = cli(cfg, *boss, "data", "inty.x", "get")
    check(out.strip() == "10", f"the refused write changed nothing: {out!r}")

    print(f"pycode.py: {harness.checks} checks passed")


main()
