//! The client actions, typed: what each request is, and which change the
//! state.
//!
//! Whether an action mutates is decided here, by an exhaustive match next
//! to the list of actions: a new action cannot be added without saying.
//! The connection uses it to hold the replies to changes until they are
//! durable (`fsync = always`).

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

#[cfg(test)]
mod tests {
    use super::Action;

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
}
