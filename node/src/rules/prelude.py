"""distkv's glue for DistKV's Python type and codec code (the `python`
feature). The node compiles and runs each record's code through `make` and
`run`, exactly as DistKV's `make_proc` does, and hands values over as
DistKV's msgpack decoder would: arrays as tuples, maps as `attrdict`,
paths as `Path`, other extension types as `ExtType`.
"""

import collections


class Path(tuple):
    """A path (DistKV's `moat.util.Path`): a tuple of its elements."""

    __slots__ = ()

    def __repr__(self):
        return "Path" + tuple.__repr__(self)


class attrdict(dict):
    """A map as DistKV's code sees it: its keys are attributes too."""

    __slots__ = ()

    def __getattr__(self, a):
        if a.startswith("_"):
            return object.__getattribute__(self, a)
        try:
            return self[a]
        except KeyError:
            raise AttributeError(a) from None

    def __setattr__(self, a, b):
        self[a] = b

    def __delattr__(self, a):
        try:
            del self[a]
        except KeyError:
            raise AttributeError(a) from None


ExtType = collections.namedtuple("ExtType", "code data")


class Entry:
    """What the code sees as `entry`, `match` or `conv`: a node of the
    tree, with its `path` and `name`."""

    __slots__ = ("path",)

    def __init__(self, path):
        self.path = path

    @property
    def name(self):
        return self.path[-1] if self.path else None

    def __repr__(self):
        return "<Entry %r>" % (self.path,)


class Limit(BaseException):
    """The code ran out of its budget (steps or time). A BaseException, so
    that `except Exception` in the code does not swallow it."""


def make(code, filename):
    """Compiles a record's code as DistKV's `make_proc` does: the body of
    a function of `value`."""
    src = "def _proc(value):\n    " + code.replace("\n", "\n    ")
    return compile(src, filename, "exec")


def run(code, value, names):
    """Runs compiled code on `value`; `names` are its globals (`entry`,
    `data`, `match` or `conv`), as DistKV passes them."""
    exec(code, names)
    return names["_proc"](value)
