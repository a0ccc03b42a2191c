"""Drive a distkv node with the real Python DistKV 0.63.3 client library and CLI.

Usage: python compat.py PORT   (exit status 0 = every check passed)

Every expectation here is what the Python DistKV 0.63.3 server answers to the
same requests (recorded from a real 0.63.3 server); the Rust node must answer the same.
"""

import os
import sys
import tempfile

import anyio
from distkv.client import open_client
from distkv.exceptions import ServerError
from moat.util import P

import harness
from harness import check, cli

PORT = int(sys.argv[1])


async def library():
    async with open_client(connect={"host": "127.0.0.1", "port": PORT}) as c:
        # set / get
        r = await c.set(P("compat.one"), value=123)
        check(r.changed is True, "set reports changed")
        r = await c.get(P("compat.one"))
        check(r.value == 123, f"get returns the value: {r}")
        r = await c.set(P("compat.one"), value="x")
        check(r.prev == 123, f"set without chain returns prev: {r}")
        r = await c.get(P("compat.one"), nchain=3)
        chain = r.chain
        check(chain.node and chain.tick and chain.prev is None, f"chain shape: {r}")

        # conditional set: stale chain fails, current chain works, chain=None means "new"
        await c.set(P("compat.one"), value="y", chain=chain)
        try:
            await c.set(P("compat.one"), value="z", chain=chain)
        except ServerError as e:
            check("Chain" in str(e), f"stale chain error text: {e}")
        else:
            check(False, "stale chain must fail")
        try:
            await c.set(P("compat.one"), value="z", chain=None)
        except ServerError as e:
            check("already exists" in str(e), f"chain=None error text: {e}")
        else:
            check(False, "chain=None on an existing entry must fail")
        r = await c.set(P("compat.new"), value=1, chain=None)
        check(r.changed, "chain=None on a new entry works")

        # idem: no new event for an equal value
        t1 = (await c._request("get_state", nodes=True)).nodes
        r = await c.set(P("compat.new"), value=1, idem=True)
        check(r.changed is False, f"idem set unchanged: {r}")
        t2 = (await c._request("get_state", nodes=True)).nodes
        check(t1 == t2, f"idem set uses no tick: {t1} {t2}")

        # values of every type survive the round trip
        odd = {"a": 1, "b": (1, 2, 3), "c": b"\x00\x01", 1: None, "f": 1.5, "big": 2**70, "neg": -5, "t": True}
        await c.set(P("compat.odd"), value=odd)
        r = await c.get(P("compat.odd"))
        check(r.value == odd, f"odd value round trip: {r.value}")
        await c.set(P("compat.path:x1f:t"), value=P("a.b"))
        r = await c.get(P("compat.path:x1f:t"))
        check(r.value == P("a.b"), f"path value and non-string keys: {r}")

        # get_tree with depth limits and path reconstruction
        for i in range(5):
            await c.set(P("compat.tree") | i, value=i * 10)
            await c.set(P("compat.tree") | i | "sub", value=i)
        got = [(tuple(r.path), r.value) async for r in c.get_tree(P("compat.tree"))]
        check(len(got) == 10, f"get_tree returns all entries: {got}")
        check(got[0] == ((0,), 0) and got[1] == ((0, "sub"), 0), f"depth-first order: {got[:3]}")
        got = [r.value async for r in c.get_tree(P("compat.tree"), max_depth=1)]
        check(got == [0, 10, 20, 30, 40], f"get_tree max_depth: {got}")
        got = [r.value async for r in c.get_tree(P("compat.tree"), min_depth=2)]
        check(got == [0, 1, 2, 3, 4], f"get_tree min_depth: {got}")

        # list (enum)
        r = await c.list(P("compat.tree"))
        check(sorted(r) == [0, 1, 2, 3, 4], f"list: {r}")

        # watch with fetch: current state, uptodate, then live changes from a 2nd client
        async with open_client(connect={"host": "127.0.0.1", "port": PORT}) as c2:
            async with c.watch(P("compat.tree"), fetch=True, max_depth=1) as w:
                seen = []
                async for m in w:
                    if m.get("state") == "uptodate":
                        break
                    seen.append(m.value)
                check(sorted(seen) == [0, 10, 20, 30, 40], f"watch fetch: {seen}")
                await c2.set(P("compat.tree.9"), value="live")
                await c2.delete(P("compat.tree") | 0)
                m = await w.__anext__()
                check(m.value == "live" and tuple(m.path)[-1] == "9", f"watch sees a set: {m}")
                m = await w.__anext__()
                check("value" not in m and tuple(m.path)[-1] == 0, f"watch sees a delete: {m}")

        # delete / delete_tree
        r = await c.delete(P("compat.one"))
        check(r.changed and r.prev == "y", f"delete: {r}")
        r = await c.get(P("compat.one"))
        check("value" not in r, f"deleted entry has no value: {r}")
        r = await c.delete_tree(P("compat.tree"))
        check(r.changed == 10, f"delete_tree count: {r}")
        got = [r async for r in c.get_tree(P("compat.tree"))]
        check(got == [], f"tree is empty after delete_tree: {got}")

        # get_state
        r = await c._request("get_state", nodes=True, known=True, deleted=True, missing=True)
        check(r.missing == {}, f"no missing ticks: {r}")
        check(r.node in r.nodes, f"get_state names this node: {r}")

        # many requests in flight on one connection
        async with anyio.create_task_group() as tg:
            for i in range(200):
                tg.start_soon(c.set, P("compat.many") | i, i)
        got = [r.value async for r in c.get_tree(P("compat.many"))]
        check(sorted(got) == list(range(200)), "200 concurrent sets")


def command_line():
    with tempfile.NamedTemporaryFile("w", suffix=".cfg", delete=False) as f:
        f.write(f"connect:\n  host: 127.0.0.1\n  port: {PORT}\n")
        cfg = f.name
    cli(cfg, "data", "cli.one.two.three", "set", "-e", ":", "123")
    out, _ = cli(cfg, "data", "cli.one.two.three", "get")
    check(out == "123\n", f"cli get int: {out!r}")
    cli(cfg, "data", "cli.hello", "set", "-v", ":", "world")
    out, _ = cli(cfg, "data", "cli.hello", "get")
    check(out == "'world'\n", f"cli get str: {out!r}")
    cli(cfg, "data", "cli.one.two.three.four.five", "set", "-v", "one", "XXX", "-e", "two", "2")
    out, _ = cli(cfg, "data", "cli.one.two.three.four.five", "get")
    check(out == "one: XXX\ntwo: 2\n", f"cli dict value: {out!r}")
    out, _ = cli(cfg, "data", "cli.one", "get", "-rd_")
    want = "two:\n  three:\n    _: 123\n    four:\n      five:\n        _:\n          one: XXX\n          two: 2\n"
    check(out == want, f"cli recursive dict get: {out!r}")
    out, _ = cli(cfg, "data", "cli.one", "list")
    check(out == "- !P two\n", f"cli list: {out!r}")
    out, _ = cli(cfg, "-m", "data", "cli.one.two.three", "get")
    check(out.startswith("chain:\n  node: ") and "\nvalue: 123\n" in out, f"cli -m get: {out!r}")
    # The 0.63.3 CLI's `-n` does not make the set conditional (as in the reference transcript).
    cli(cfg, "data", "cli.hello", "set", "-v", ":", "again", "-n")
    out, _ = cli(cfg, "data", "cli.hello", "get")
    check(out == "'again'\n", f"cli set -n: {out!r}")
    cli(cfg, "data", "cli.hello", "delete")
    _, err = cli(cfg, "data", "cli.hello", "get", rc=1)
    check("No data at cli.hello" in err, f"cli get of deleted: {err!r}")
    out, _ = cli(cfg, "internal", "state", "-n", "-d", "-m")
    check("missing: {}\n" in out and "nodes:\n" in out, f"cli internal state: {out!r}")
    # The deleter group lives in the meta tree at (None, "actor", "del").
    out, _ = cli(cfg, "internal", "deleter", "rust1")
    check("changed: true\n" in out and "nodes:\n  - rust1\n" in out, f"cli deleter add: {out!r}")
    out, _ = cli(cfg, "internal", "deleter")
    check("value:\n  nodes:\n  - rust1\n" in out, f"cli deleter: {out!r}")
    out, _ = cli(cfg, "internal", "deleter", "-d")
    check("nodes: []\n" in out, f"cli deleter -d: {out!r}")
    os.unlink(cfg)


anyio.run(library)
command_line()
print(f"python compat: {harness.checks} checks passed")
