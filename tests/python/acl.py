"""ACLs with the real Python DistKV 0.63.3 CLI and client library: DistKV's
own acceptance case (user `aclix` bound to ACL `foo`), the error text a
refused write gets, `acl test`, and a tree walk that skips what the user
may not read.

Usage: python acl.py PORT   (exit status 0 = every check passed)

Runs against a fresh node: it switches login on.
"""

import sys
import tempfile

import anyio
from distkv.client import open_client
from moat.util import P

import harness
from harness import check, cli

PORT = int(sys.argv[1])
ACLIX = "password name=aclix password=aclix-pw"


async def define_acl():
    """ACL `foo`: `one` = rxnc, `one.two` = rc (as DistKV's test does it,
    through the library: 0.63.3's own `acl set` is broken)."""
    async with open_client(connect={"host": "127.0.0.1", "port": PORT}) as c:
        await c._request("set_internal", path=P("acl.foo.one"), value="rxnc")
        await c._request("set_internal", path=P("acl.foo.one.two"), value="rc")
        await c._request("set_value", path=P("hidden.x"), value=1)
        await c._request("set_value", path=P("one.seen"), value=2)


async def walk(auth):
    """The paths and values a logged-in library client's get_tree shows."""
    async with open_client(connect={"host": "127.0.0.1", "port": PORT, "auth": auth}) as c:
        out = {}
        async for r in c.get_tree(P(":"), nchain=0):
            out[str(r.path)] = r.get("value", "-")
        return out


def main():
    with tempfile.NamedTemporaryFile("w", suffix=".cfg", delete=False) as f:
        f.write(f"connect:\n  host: 127.0.0.1\n  port: {PORT}\n")
        cfg = f.name
    anyio.run(define_acl)
    out, _ = cli(cfg, "auth", "-m", "password", "user", "add", "name=aclix", "password=aclix-pw")
    check(out.strip() == "aclix", f"user add: {out!r}")
    out, _ = cli(cfg, "auth", "-m", "password", "user", "param", "aclix", "acl", "foo")
    check(out.strip() == "aclix acl foo", f"user param: {out!r}")
    out, _ = cli(cfg, "auth", "-m", "password", "user", "add", "name=boss", "password=boss-pw")
    out, _ = cli(cfg, "auth", "-m", "password", "init")
    check(out.strip() == "Authorization switched to password", f"init: {out!r}")

    a = ["-a", ACLIX]
    cli(cfg, *a, "data", "one", "set", "-e", ":", "10")
    cli(cfg, *a, "data", "one.two", "set", "-e", ":", "11")
    _, err = cli(cfg, *a, "data", "one.two.three", "set", "-e", ":", "12", rc=1)
    check("ACLError(<AclEntry:[None, 'acl', 'foo', 'one', 'two']@" in err, f"no 'n' on one.two: {err}")
    check(err.rstrip().endswith("='rc'>, 'n')"), f"the missing letter is n: {err}")
    _, err = cli(cfg, *a, "data", "one.two", "set", "-e", ":", "12", rc=1)
    check(err.rstrip().endswith("='rc'>, 'w')"), f"overwriting one.two needs w: {err}")
    out, _ = cli(cfg, *a, "data", "one.two", "get")
    check(out.strip() == "11", f"the refused write changed nothing: {out!r}")

    # The meta tree is not for a user bound to an ACL: it could rewrite it.
    _, err = cli(cfg, *a, "acl", "list", rc=1)
    check("PermissionError" in err, f"acl list as aclix: {err}")

    # `acl test`, by an unrestricted user: `+`/`-` per mode.
    boss = ["-a", "password name=boss password=boss-pw"]
    out, _ = cli(cfg, *boss, "acl", "test", "-a", "foo", "-m", "c", "one.two")
    check(out.strip() == "+", f"foo allows c on one.two: {out!r}")
    out, _ = cli(cfg, *boss, "acl", "test", "-a", "foo", "-m", "w", "one.two")
    check(out.strip() == "-", f"foo refuses w on one.two: {out!r}")

    # A walk shows what the ACL lets aclix read: `one` (r), but nothing
    # below it, as `one` lacks e; no pattern matches `hidden`, which allows
    # everything (DistKV's rule).
    seen = anyio.run(walk, ACLIX)
    check(seen.get("one") == 10, f"walk: {seen}")
    check(not any(p.startswith("one.") for p in seen), f"nothing below one: {seen}")
    check(seen.get("hidden.x") == 1, f"no pattern, no restriction: {seen}")

    print(f"acl.py: {harness.checks} checks passed")


main()
