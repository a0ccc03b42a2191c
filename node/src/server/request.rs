//! The client actions, typed: what each request is, and which change the
//! state.
//!
//! Whether an action mutates is decided here, by an exhaustive match next
//! to the list of actions: a new action cannot be added without saying.
//! The connection uses it to hold the replies to changes until they are
//! durable (`fsync = always`).
//!
//! The value requests (`get_value`, `set_value`, `delete_value`) are most
//! of a busy node's traffic. A connection reads them in place
//! ([`Request`]): the fields it needs are found in the message's bytes and
//! decoded one by one ([`ValueArgs`]), instead of decoding the whole
//! message into a map first; anything else is decoded as a whole.

use distkv_client::raw::{self, FieldSpans};
use distkv_model::codec::{DecodeError, Limits};
use distkv_model::cursor::Cursor;
use distkv_model::{PathStrings, Value};

use super::stream::Kind;

/// A client action (the request's `action` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Action {
    /// `get_value` (`meta: false`) / `get_internal`.
    GetValue { meta: bool },
    /// `set_value` / `set_internal`.
    SetValue { meta: bool },
    /// `delete_value` / `delete_internal`.
    DeleteValue { meta: bool },
    /// `enum` / `enumerate` / `enum_internal`.
    Enumerate { meta: bool },
    /// `get_tock`.
    GetTock,
    /// `get_state`.
    GetState,
    /// `update`: applies a client-supplied event.
    Update,
    /// `enum_node`.
    EnumNode,
    /// `root`: moves the connection's root.
    Root,
    /// `stop`: stops one of the connection's streams.
    Stop,
    /// `delete_tree`.
    DeleteTree,
    /// `save`: a snapshot to a file.
    Save,
    /// `log`: a change log to a file.
    Log,
    /// `get_tree`, `get_tree_internal`, `watch`, `msg_monitor`.
    Stream(Kind),
    /// `msg_send`.
    MsgSend,
    /// `kill_node`.
    KillNode,
    /// `diffie_hellman`: agrees on the connection's session key.
    DiffieHellman,
    /// `auth`: logs in.
    Auth,
    /// `auth_set`: creates or replaces a user.
    AuthSet,
    /// `auth_get`: a user's public data.
    AuthGet,
    /// `auth_list`: the users of a method.
    AuthList,
    /// `set_auth_typ`: switches the login method.
    SetAuthTyp,
    /// `auth_info`: meant to return `(None, "auth")`.
    AuthInfo,
    /// `test_acl`: what an ACL allows at a path.
    TestAcl,
    /// `fake_info` (`send: false`) and `fake_info_send` (`send: true`):
    /// tick ranges marked superseded or deleted by hand.
    FakeInfo {
        /// Broadcast instead of applying here.
        send: bool,
    },
}

impl Action {
    /// The action named `name`, if there is one.
    pub(super) fn parse(name: &str) -> Option<Action> {
        Some(match name {
            "get_value" => Action::GetValue { meta: false },
            "get_internal" => Action::GetValue { meta: true },
            "set_value" => Action::SetValue { meta: false },
            "set_internal" => Action::SetValue { meta: true },
            "delete_value" => Action::DeleteValue { meta: false },
            "delete_internal" => Action::DeleteValue { meta: true },
            "enum" | "enumerate" => Action::Enumerate { meta: false },
            "enum_internal" => Action::Enumerate { meta: true },
            "get_tock" => Action::GetTock,
            "get_state" => Action::GetState,
            "update" => Action::Update,
            "enum_node" => Action::EnumNode,
            "root" => Action::Root,
            "stop" => Action::Stop,
            "delete_tree" => Action::DeleteTree,
            "save" => Action::Save,
            "log" => Action::Log,
            "get_tree" => Action::Stream(Kind::GetTree),
            "get_tree_internal" => Action::Stream(Kind::GetTreeInternal),
            "watch" => Action::Stream(Kind::Watch),
            "msg_monitor" => Action::Stream(Kind::MsgMonitor),
            "msg_send" => Action::MsgSend,
            "kill_node" => Action::KillNode,
            "diffie_hellman" => Action::DiffieHellman,
            "auth" => Action::Auth,
            "auth_set" => Action::AuthSet,
            "auth_get" => Action::AuthGet,
            "auth_list" => Action::AuthList,
            "set_auth_typ" => Action::SetAuthTyp,
            "auth_info" => Action::AuthInfo,
            "test_acl" => Action::TestAcl,
            "fake_info" => Action::FakeInfo { send: false },
            "fake_info_send" => Action::FakeInfo { send: true },
            _ => return None,
        })
    }

    /// Whether the action changes the tree (through the commit path).
    pub(super) fn mutates(self) -> bool {
        match self {
            Action::SetValue { .. }
            | Action::DeleteValue { .. }
            | Action::Update
            | Action::DeleteTree
            | Action::AuthSet
            | Action::SetAuthTyp => true,
            Action::GetValue { .. }
            | Action::Enumerate { .. }
            | Action::GetTock
            | Action::GetState
            | Action::EnumNode
            | Action::Root
            | Action::Stop
            | Action::Save
            | Action::Log
            | Action::Stream(_)
            | Action::MsgSend
            | Action::KillNode
            | Action::DiffieHellman
            | Action::Auth
            | Action::AuthGet
            | Action::AuthList
            | Action::AuthInfo
            | Action::TestAcl
            | Action::FakeInfo { .. } => false,
        }
    }

    /// Whether a connection that must log in may send it before it has.
    pub(super) fn before_login(self) -> bool {
        matches!(self, Action::Auth | Action::DiffieHellman)
    }

    /// Whether the action administers the node or its users, which a user
    /// bound to an ACL may not (the `*_internal` actions are refused where
    /// their paths are resolved).
    pub(super) fn administers(self) -> bool {
        match self {
            Action::Save
            | Action::Log
            | Action::KillNode
            | Action::AuthSet
            | Action::AuthGet
            | Action::AuthList
            | Action::SetAuthTyp
            | Action::AuthInfo
            | Action::FakeInfo { .. } => true,
            Action::GetValue { .. }
            | Action::SetValue { .. }
            | Action::DeleteValue { .. }
            | Action::Enumerate { .. }
            | Action::GetTock
            | Action::GetState
            | Action::Update
            | Action::EnumNode
            | Action::Root
            | Action::Stop
            | Action::DeleteTree
            | Action::Stream(_)
            | Action::MsgSend
            | Action::DiffieHellman
            | Action::Auth
            | Action::TestAcl => false,
        }
    }
}

/// The keys a [`Request`] finds, in the order of its spans.
const KEYS: [&[u8]; 11] = [
    b"seq", b"action", b"state", b"path", b"value", b"nchain", b"idem", b"prev", b"chain", b"node",
    b"tick",
];
const SEQ: usize = 0;
const ACTION: usize = 1;
const STATE: usize = 2;
const PATH: usize = 3;
const VALUE: usize = 4;
const NCHAIN: usize = 5;
const IDEM: usize = 6;
const PREV: usize = 7;
const CHAIN: usize = 8;
const NODE: usize = 9;
const TICK: usize = 10;

/// Where a [`Request`]'s fields lie in its message.
pub(super) type RequestSpans = FieldSpans<{ KEYS.len() }>;

/// A request read in place: the fields a value request uses, found in the
/// message's bytes (checked as the decoder checks a whole message). A
/// field is what [`Value::get`] finds in the decoded message.
pub(super) struct Request<'a> {
    frame: &'a [u8],
    spans: RequestSpans,
}

impl<'a> Request<'a> {
    /// Parses the message at the start of `buf` under `limits`: where its
    /// fields are, and its length (see [`FieldSpans::parse_keys`]).
    pub(super) fn parse(buf: &[u8], limits: Limits) -> Result<(RequestSpans, usize), DecodeError> {
        FieldSpans::parse_keys(buf, limits, &KEYS)
    }

    /// The request in `frame`, whose fields [`Request::parse`] found.
    pub(super) fn new(frame: &'a [u8], spans: RequestSpans) -> Request<'a> {
        Request { frame, spans }
    }

    fn field(&self, i: usize) -> Option<&'a [u8]> {
        self.spans.get(self.frame, i)
    }

    /// `seq`, if it is a non-negative integer.
    pub(super) fn seq(&self) -> Option<u64> {
        self.field(SEQ).and_then(raw::as_u64)
    }

    /// `action`, if it is a string.
    pub(super) fn action(&self) -> Option<&'a str> {
        self.field(ACTION).and_then(raw::as_str)
    }

    /// Whether the request has a `state` (a client stream's message).
    pub(super) fn has_state(&self) -> bool {
        self.field(STATE).is_some()
    }

    /// The value request's fields, decoded; the path's strings shared
    /// with the connection's last path where they are the same.
    pub(super) fn value_args(&self, names: &mut PathStrings) -> ValueArgs {
        let f = |i: usize| self.field(i).map(raw::decode_field);
        ValueArgs {
            path: self.field(PATH).map(|b| decode_path(b, names)),
            value: f(VALUE),
            nchain: f(NCHAIN),
            idem: f(IDEM),
            prev: f(PREV),
            chain: f(CHAIN),
            node: f(NODE),
            tick: f(TICK),
        }
    }
}

/// Decodes a `path` field: a path (ext 3) into one allocation of its
/// elements, its strings shared with `names` where they have the same
/// bytes (see [`PathStrings`]); anything else as [`raw::decode_field`]
/// does.
fn decode_path(b: &[u8], names: &mut PathStrings) -> Value {
    let ext = matches!(b.first(), Some(0xc7..=0xc9 | 0xd4..=0xd8));
    match raw::path_elements(b) {
        Some(elements) if ext => {
            let n = elements.count();
            let mut elements = raw::path_elements(b).into_iter().flatten();
            // A request's fields are checked when it is read: every
            // element decodes.
            Value::Path(
                (0..n)
                    .map(|at| match elements.next() {
                        Some(Ok(e)) => path_element(at, e, names),
                        _ => Value::Nil,
                    })
                    .collect(),
            )
        }
        _ => raw::decode_field(b),
    }
}

/// Places of a connection's last path whose strings are kept for its
/// next path (see [`PathStrings`]).
const KEPT_PLACES: usize = 8;
/// Bytes of such a string at most: those whose encoding takes at most 64
/// bytes.
const KEPT_BYTES: usize = 62;

/// A connection's strings of its last path, bounded: [`KEPT_PLACES`]
/// places, strings of up to [`KEPT_BYTES`] bytes.
pub(super) fn path_strings() -> PathStrings {
    PathStrings::new(KEPT_PLACES, KEPT_BYTES)
}

/// The path element encoded as `e` at place `at`: a string shared with
/// `names` where it has the same bytes, anything else decoded.
fn path_element(at: usize, e: &[u8], names: &mut PathStrings) -> Value {
    let mut c = Cursor::new(e);
    let string = c.str().filter(|_| c.at_end());
    if let Some(s) = string.and_then(|b| names.get(at, b)) {
        return Value::Str(s);
    }
    raw::decode(e).unwrap_or(Value::Nil)
}

/// The fields of a value request (`get_value`, `set_value`,
/// `delete_value` and their `_internal` forms), each as the request has it.
#[derive(Debug, Clone, Default)]
pub struct ValueArgs {
    /// The entry's path, relative to the connection's root.
    pub path: Option<Value>,
    /// The value to set.
    pub value: Option<Value>,
    /// How many chain links the reply carries.
    pub nchain: Option<Value>,
    /// `set_value`: no change (and no event) if the value is already there.
    pub idem: Option<Value>,
    /// `set_value`: the value the entry must have now.
    pub prev: Option<Value>,
    /// `set_value`: the chain the entry must have now (`None`: must be new).
    pub chain: Option<Value>,
    /// `get_value` without a path: the entry changed by this node …
    pub node: Option<Value>,
    /// … at this tick.
    pub tick: Option<Value>,
}

impl ValueArgs {
    /// The value request fields of the decoded message `msg`.
    pub fn from_msg(msg: &Value) -> ValueArgs {
        let f = |k: &str| msg.get(k).cloned();
        ValueArgs {
            path: f("path"),
            value: f("value"),
            nchain: f("nchain"),
            idem: f("idem"),
            prev: f("prev"),
            chain: f("chain"),
            node: f("node"),
            tick: f("tick"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{path_strings, Action, Request, ValueArgs, KEPT_BYTES, KEPT_PLACES};
    use distkv_model::codec::{self, Limits};
    use distkv_model::{path, Path, SharedStr, Value};

    /// A request read in place finds what the decoded message holds:
    /// `seq`, `action`, `state` and every value request field, including
    /// where keys repeat (the first counts), are not strings, or are
    /// nested, and where a message is not a map.
    #[test]
    fn a_request_read_in_place_is_the_decoded_request() {
        let s = Value::str;
        let kv = |k: Value, v: Value| (k, v);
        let p = |p: Path| Value::Path(p);
        let messages = vec![
            Value::map([
                ("seq", Value::Int(7)),
                ("action", s("set_value")),
                ("path", p(path!["a", 1i64, "b"])),
                ("value", Value::Map(vec![kv(s("path"), s("inner"))])),
                ("nchain", Value::Bool(true)),
            ]),
            Value::Map(vec![
                kv(s("seq"), Value::uint(u64::MAX)),
                kv(s("seq"), Value::Int(3)),
                kv(Value::Int(1), s("path")),
                kv(s("action"), s("get_value")),
                kv(s("action"), s("set_value")),
                kv(s("pat"), s("no")),
                kv(s("paths"), s("no")),
                kv(s("node"), s("n1")),
                kv(s("tick"), Value::Int(-4)),
                kv(s("idem"), Value::Nil),
                kv(s("prev"), Value::Float(1.5)),
                kv(s("chain"), Value::Nil),
                kv(s("state"), s("start")),
                kv(
                    s("value"),
                    Value::Array(vec![p(path![]), Value::Bin(vec![0, 1].into())]),
                ),
                kv(s("value"), s("second")),
            ]),
            Value::Map(
                (0..40)
                    .map(|i| kv(s(&format!("k{i}")), Value::Int(i)))
                    .chain([
                        kv(s("seq"), Value::Float(2.0)),
                        kv(s("path"), Value::Int(5)),
                    ])
                    .collect(),
            ),
            Value::map([
                (&*"x".repeat(40), Value::Nil),
                ("action", Value::Int(1)),
                ("path", Value::Array(vec![s("x"), Value::Nil])),
            ]),
            Value::map([
                ("seq", Value::Int(-1)),
                ("action", s("delete_value")),
                ("path", p(path![])),
            ]),
            Value::map([(
                "path",
                p(path![Value::Float(0.5), Value::Bool(true), u64::MAX, "ü"]),
            )]),
            Value::Map(Vec::new()),
            Value::Array(vec![s("seq"), Value::Int(1)]),
            s("seq"),
            Value::Nil,
        ];
        for msg in messages {
            let bytes = codec::to_vec(&msg);
            let (spans, n) = Request::parse(&bytes, Limits::default()).unwrap();
            assert_eq!(n, bytes.len(), "{msg}");
            let req = Request::new(&bytes, spans);
            assert_eq!(req.seq(), msg.get("seq").and_then(Value::as_u64), "{msg}");
            assert_eq!(
                req.action(),
                msg.get("action").and_then(Value::as_str),
                "{msg}"
            );
            assert_eq!(req.has_state(), msg.get("state").is_some(), "{msg}");
            let enc = |a: ValueArgs| {
                [
                    a.path, a.value, a.nchain, a.idem, a.prev, a.chain, a.node, a.tick,
                ]
                .map(|v| v.map(|v| codec::to_vec(&v)))
            };
            assert_eq!(
                enc(req.value_args(&mut path_strings())),
                enc(ValueArgs::from_msg(&msg)),
                "{msg}"
            );
        }
    }

    #[test]
    fn exactly_the_changes_mutate() {
        let mutating = [
            "set_value",
            "set_internal",
            "delete_value",
            "delete_internal",
            "update",
            "delete_tree",
            "auth_set",
            "set_auth_typ",
        ];
        let others = [
            "get_value",
            "get_internal",
            "enum",
            "enumerate",
            "enum_internal",
            "get_tock",
            "get_state",
            "enum_node",
            "root",
            "stop",
            "save",
            "log",
            "get_tree",
            "get_tree_internal",
            "watch",
            "msg_monitor",
            "msg_send",
            "kill_node",
            "diffie_hellman",
            "auth",
            "auth_get",
            "auth_list",
            "auth_info",
            "fake_info",
            "fake_info_send",
        ];
        for a in mutating {
            assert!(Action::parse(a).is_some_and(Action::mutates), "{a}");
        }
        for a in others {
            assert!(Action::parse(a).is_some_and(|x| !x.mutates()), "{a}");
        }
        assert_eq!(Action::parse("nope"), None);
    }

    /// Paths decoded with one connection's recent names are the paths
    /// decoded afresh, element by element and kind by kind; a string
    /// with the bytes of the one at the same place before is that very
    /// string. (Requests whose path does not decode are refused before
    /// their fields are read.)
    #[test]
    fn recent_names_share_equal_strings() {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};
        let mut rng = StdRng::seed_from_u64(14);
        let long = "x".repeat(KEPT_BYTES + 2);
        let pick = |rng: &mut StdRng| -> Vec<u8> {
            let v = match rng.gen_range(0..9) {
                0 => Value::str("bench"),
                1 => Value::str("benci"),
                2 => Value::str(""),
                3 => Value::str(&long),
                4 => Value::Int(rng.gen_range(0..3)),
                5 => Value::Float(1.0),
                6 => Value::Bin(std::sync::Arc::from(&b"bench"[..])),
                // `bench` as a str 8: the same string, other bytes.
                7 => return b"\xd9\x05bench".to_vec(),
                _ => Value::str(&format!("k{}", rng.gen_range(0..3))),
            };
            codec::to_vec(&v)
        };
        let mut names = path_strings();
        let mut last: Vec<(Vec<u8>, Value)> = Vec::new();
        let mut shared = 0;
        for _ in 0..20_000 {
            let n = rng.gen_range(0..KEPT_PLACES + 3);
            let elements: Vec<Vec<u8>> = (0..n).map(|_| pick(&mut rng)).collect();
            let mut payload = Vec::new();
            elements.iter().for_each(|e| payload.extend_from_slice(e));
            let mut b = Vec::new();
            codec::write_ext(&mut b, 3, &payload);
            let got = super::decode_path(&b, &mut names);
            let fresh = distkv_client::raw::decode_field(&b);
            let (Value::Path(got), Value::Path(fresh)) = (&got, &fresh) else {
                panic!("not a path: {got:?} / {fresh:?}");
            };
            assert_eq!(got.len(), fresh.len());
            for (at, ((g, f), e)) in got.iter().zip(fresh.iter()).zip(&elements).enumerate() {
                assert_eq!(codec::to_vec(g), codec::to_vec(f), "{at}: {g:?} / {f:?}");
                assert!(
                    g.same_type(f) && g == f || g.is_nil() && f.is_nil(),
                    "{g:?} / {f:?}"
                );
                // Within the bounds, the string of the path before with
                // the same bytes at the same place is shared.
                let kept = at < KEPT_PLACES && e.len() <= KEPT_BYTES + 2;
                if let (true, Value::Str(g), Some((_, Value::Str(b)))) =
                    (kept, g, last.get(at).filter(|(bytes, _)| bytes == e))
                {
                    assert!(SharedStr::ptr_eq(g, b), "{at}: {g:?} not shared");
                    shared += 1;
                }
            }
            last = elements.into_iter().zip(got.iter().cloned()).collect();
        }
        assert!(shared > 1000, "{shared} strings shared");
    }
}
