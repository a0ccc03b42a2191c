"""Users and login with the real Python DistKV 0.63.3 CLI and client library.

Usage: python auth.py PORT   (exit status 0 = every check passed)

Runs against a fresh node: it switches login on (first the `password`
method, then `root`), so it cannot share a node with other checks.
"""

import hashlib
import sys
import tempfile

import anyio
from distkv.client import open_client
from moat.util import P

import harness
from harness import check, cli

PORT = int(sys.argv[1])
JOE = "password name=joe password=geheim123"


async def stored_digest(auth):
    """The stored record of joe, read by a logged-in library client."""
    async with open_client(connect={"host": "127.0.0.1", "port": PORT, "auth": auth}) as c:
        r = await c._request("get_internal", path=P("auth.password.user.joe"))
        return r.value


def main():
    with tempfile.NamedTemporaryFile("w", suffix=".cfg", delete=False) as f:
        f.write(f"connect:\n  host: 127.0.0.1\n  port: {PORT}\n")
        cfg = f.name
    cli(cfg, "data", "auth.test", "set", "-v", ":", "hello")

    # password: add a user, switch login on
    out, _ = cli(cfg, "auth", "-m", "password", "user", "add", "name=joe", "password=geheim123")
    check(out.strip() == "joe", f"user add prints the ident: {out!r}")
    out, _ = cli(cfg, "auth", "-m", "password", "init")
    check(out.strip() == "Authorization switched to password", f"init: {out!r}")

    _, err = cli(cfg, "data", "auth.test", "get", rc=1)
    check("ClientAuthRequiredError" in err, f"anonymous get needs a login: {err}")
    _, err = cli(cfg, "-a", "password name=joe password=wrongpass", "data", "auth.test", "get", rc=1)
    check("AuthFailedError" in err and "Password hashes do not match" in err, f"wrong password: {err}")
    check("wrongpass" not in err, f"the password is not echoed: {err}")
    out, _ = cli(cfg, "-a", JOE, "data", "auth.test", "get")
    check(out.strip() == "'hello'", f"logged in, get works: {out!r}")
    out, _ = cli(cfg, "-a", JOE, "auth", "-m", "password", "user", "list")
    check(out.split() == ["joe"], f"user list: {out!r}")

    # only the digest is stored
    rec = anyio.run(stored_digest, JOE)
    check(rec == {"password": hashlib.sha256(b"geheim123").digest()}, f"stored record: {rec!r}")

    # root: add the user, switch to it
    out, _ = cli(cfg, "-a", JOE, "auth", "-m", "root", "user", "add")
    check(out.strip() == "*", f"root user add prints '*': {out!r}")
    out, _ = cli(cfg, "-a", JOE, "auth", "-m", "root", "init")
    check(out.strip() == "Authorization switched to root", f"init root: {out!r}")
    _, err = cli(cfg, "data", "auth.test", "get", rc=1)
    check("ClientAuthRequiredError" in err, f"anonymous get needs a login: {err}")
    _, err = cli(cfg, "-a", JOE, "data", "auth.test", "get", rc=1)
    check("ClientAuthMethodError" in err, f"the old method is refused: {err}")
    out, _ = cli(cfg, "-a", "root", "data", "auth.test", "get")
    check(out.strip() == "'hello'", f"-a root works: {out!r}")
    out, _ = cli(cfg, "-a", "root", "auth", "-m", "root", "user", "list")
    check(out.strip() == "*", f"user list: {out!r}")
    out, _ = cli(cfg, "-a", "root", "auth", "-m", "root", "user", "list", "-v")
    check(out == "ident: '*'\nkind: user\ntyp: root\n", f"user list -v: {out!r}")

    # _test: users are made by DistKV's chatty exchange (a client stream)
    out, _ = cli(cfg, "-a", "root", "auth", "-m", "_test", "user", "add", "name=tester")
    check(out.strip() == "tester", f"_test user add prints the name: {out!r}")
    out, _ = cli(cfg, "-a", "root", "auth", "-m", "_test", "init")
    check(out.strip() == "Authorization switched to _test", f"init _test: {out!r}")
    out, _ = cli(cfg, "-a", "_test name=tester", "data", "auth.test", "get")
    check(out.strip() == "'hello'", f"-a _test works: {out!r}")
    _, err = cli(cfg, "-a", "_test name=nobody", "data", "auth.test", "get", rc=1)
    check("nobody" in err, f"an unknown _test user is refused: {err}")
    out, _ = cli(cfg, "-a", "_test name=tester", "auth", "-m", "_test", "user", "list")
    check(out.split() == ["tester"], f"_test user list: {out!r}")

    print(f"auth.py: {harness.checks} checks passed")


main()
