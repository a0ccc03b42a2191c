"""Watch one node with the real Python DistKV 0.63.3 client library while
another node is written to.

Usage: python cross_node.py PORT [N]

Connects to the node at 127.0.0.1:PORT, watches `cross.node` (with fetch,
so that "uptodate" shows the watch is in place), then prints "ready" and
waits for N (default 3) values to arrive below that path, printing each as
"seen PATH VALUE". Exit status 0 when all N arrived, 1 after 30 seconds
without them.
"""

import sys

import anyio
from distkv.client import open_client
from moat.util import P

PORT = int(sys.argv[1])
N = int(sys.argv[2]) if len(sys.argv) > 2 else 3
TIMEOUT = 30


async def main():
    seen = {}
    async with open_client(connect={"host": "127.0.0.1", "port": PORT}) as c:
        print("connected to", c.node, flush=True)
        try:
            with anyio.fail_after(TIMEOUT):
                async with c.watch(P("cross.node"), fetch=True) as w:
                    async for m in w:
                        if m.get("state") == "uptodate":
                            print("ready", flush=True)
                            continue
                        if "value" not in m:
                            continue
                        path = tuple(m.path)
                        print("seen", path, repr(m.value), flush=True)
                        seen[path] = m.value
                        if len(seen) >= N:
                            break
        except TimeoutError:
            print(f"FAILED: only {len(seen)} of {N} values within {TIMEOUT} s: {seen}", file=sys.stderr, flush=True)
            return 1
    print("done", len(seen), flush=True)
    return 0


sys.exit(anyio.run(main))
