"""Types with the real Python DistKV 0.63.3 CLI: a JSON-schema type set
with `type set -S`, matched with `type match -t`; a valid value is stored,
one failing the schema's type and one failing its minimum are refused; a
definition whose good example fails is refused; Python code stored with
`type set -s` (DistKV runs Python, we run Rhai) is refused with a clear
error, never accepted silently.

Usage: python typecheck.py PORT   (exit status 0 = every check passed)
"""

import json
import os
import sys
import tempfile

import harness
from harness import check, cli

PORT = int(sys.argv[1])


def main():
    tmp = tempfile.mkdtemp()
    cfg = os.path.join(tmp, "distkv.cfg")
    with open(cfg, "w") as f:
        f.write(f"connect:\n  host: 127.0.0.1\n  port: {PORT}\n")
    schema = os.path.join(tmp, "schema.json")
    with open(schema, "w") as f:
        json.dump({"type": "integer", "minimum": 3}, f)

    cli(cfg, "type", "set", "-S", schema, "-g", "3", "-g", "5", "-b", "'x'", "num")
    cli(cfg, "type", "match", "-t", "num", "numbers.#")
    # (DistKV's `type match PATH` cannot read a match back: it looks for
    # `type` in the reply instead of its value.)
    out, _ = cli(cfg, "type", "match", ":")
    check("numbers" in out and "num" in out, f"type match : dumps the matches: {out!r}")

    cli(cfg, "data", "numbers.a", "set", "-e", ":", "42")
    out, _ = cli(cfg, "data", "numbers.a", "get")
    check(out.strip() == "42", f"a valid value is stored: {out!r}")
    _, err = cli(cfg, "data", "numbers.a", "set", "-v", ":", "x", rc=1)
    check("ServerError: ValidationError(" in err and "is not of type" in err, f"schema type: {err}")
    _, err = cli(cfg, "data", "numbers.a", "set", "-e", ":", "2", rc=1)
    check("ServerError: ValidationError(" in err and "minimum" in err, f"schema minimum: {err}")
    out, _ = cli(cfg, "data", "numbers.a", "get")
    check(out.strip() == "42", f"refused writes changed nothing: {out!r}")
    # Outside the match, anything goes.
    cli(cfg, "data", "numbers", "set", "-v", ":", "x")

    _, err = cli(cfg, "type", "set", "-S", schema, "-g", "3", "-g", "1", "-b", "'x'", "num2", rc=1)
    check("ServerError: ValueError('failed on good value 1')" in err, f"bad good example: {err}")

    script = os.path.join(tmp, "script.py")
    with open(script, "w") as f:
        f.write("if not 0 <= value <= 100:\n    raise ValueError('not a percentage')\n")
    _, err = cli(cfg, "type", "set", "-s", script, "-g", "3", "-g", "5", "-b", "101", "pct", rc=1)
    check("is not a Rhai script" in err, f"Python code is refused clearly: {err}")
    out, _ = cli(cfg, "type", "list", ":")
    check("pct" not in out and "num2" not in out, f"refused types are not stored: {out!r}")
    check("num" in out, f"type list shows num: {out!r}")
    print(f"typecheck.py: {harness.checks} checks passed")


if __name__ == "__main__":
    main()
