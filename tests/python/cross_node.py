"""Watch one node with the real Python DistKV 0.63.3 client library while
another node is written to.

Usage: python cross_node.py PORT [N [OTHER_PORT]]

Connects to the node at 127.0.0.1:PORT, watches `cross.node` (with fetch,
so that "uptodate" shows the watch is in place), then prints "ready" and
waits for N (default 3) values to arrive below that path, printing each as
"seen PATH VALUE". With OTHER_PORT, it then also passes user messages
(`msg_send` on the other node, `msg_monitor` on this one), packed and raw,
and prints "msg ok". Exit status 0 when all of it worked, 1 after 30
seconds without.
"""

import sys

import anyio
from distkv.client import open_client
from moat.util import P

PORT = int(sys.argv[1])
N = int(sys.argv[2]) if len(sys.argv) > 2 else 3
OTHER = int(sys.argv[3]) if len(sys.argv) > 3 else None
TIMEOUT = 30
TOPIC = ("pytest", "chan")


async def messages(mon_client):
    """msg_send through the other node until this node's monitor sees it."""
    async with open_client(connect={"host": "127.0.0.1", "port": OTHER}) as sender:
        for kind, payload in (("data", {"a": 1, "b": (2, 3)}), ("raw", b"\x01\x02raw")):
            raw = kind == "raw"
            async with mon_client.msg_monitor(TOPIC, raw=raw) as mon:
                async with anyio.create_task_group() as tg:

                    async def keep_sending():
                        while True:
                            if raw:
                                await sender.msg_send(TOPIC, raw=payload)
                            else:
                                await sender.msg_send(TOPIC, data=payload)
                            await anyio.sleep(0.1)

                    tg.start_soon(keep_sending)
                    async for m in mon:
                        got = m.get("raw") if raw else m.get("data")
                        print("msg", kind, tuple(m.topic), repr(got), flush=True)
                        if got != payload:
                            raise RuntimeError(f"sent {payload!r}, got {got!r}")
                        tg.cancel_scope.cancel()
                        break
    print("msg ok", flush=True)


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
            if OTHER is not None:
                with anyio.fail_after(TIMEOUT):
                    await messages(c)
        except TimeoutError:
            print(f"FAILED: timed out after {TIMEOUT} s; values seen: {seen}", file=sys.stderr, flush=True)
            return 1
    print("done", len(seen), flush=True)
    return 0


sys.exit(anyio.run(main))
