//! ACLs on every client action, over real TCP: a table of every action ×
//! every mode letter taken away, with a password user bound to an ACL.
//!
//! The ACL `m` gives the flags `F` to `zone` and to everything below it
//! (`zone.#`); the data root matches no pattern, which allows everything.
//! For each letter `L`, `F` is every letter but `L`, changed by an admin
//! connection while the user stays logged in (a changed ACL counts at
//! once). An action whose needs (the letters DistKV's rules check for it
//! here) include `L` must not fully work, and must neither show a value
//! (if `L` is `r` or `x`) nor change data; every other action must work as
//! for an unrestricted user, which a last round checks too.

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use distkv_model::{path, Path, Value};
use distkv_tests::*;

/// Every mode letter.
const ALL: &str = "rwcdxena";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Act {
    GetValue,
    GetByTick,
    SetExisting,
    SetNew,
    DeleteValue,
    Enum,
    EnumData,
    GetTree,
    Watch,
    DeleteTree,
    Update,
    MsgSend,
    MsgMonitor,
    TestAcl,
    /// The meta tree and the node's administration.
    Admin,
}

impl Act {
    const EVERY: [Act; 15] = [
        Act::GetValue,
        Act::GetByTick,
        Act::SetExisting,
        Act::SetNew,
        Act::DeleteValue,
        Act::Enum,
        Act::EnumData,
        Act::GetTree,
        Act::Watch,
        Act::DeleteTree,
        Act::Update,
        Act::MsgSend,
        Act::MsgMonitor,
        Act::TestAcl,
        Act::Admin,
    ];

    /// The letters the action needs on `zone.a.b` (seeded `zone.a` = 1,
    /// `zone.a.b` = 2), by DistKV's rules: `x` to step into an existing
    /// child, `n` into a new one, then the action's own letter(s).
    fn needs(self) -> &'static str {
        match self {
            Act::GetValue | Act::GetByTick => "xr",
            Act::SetExisting | Act::DeleteValue => "xw",
            Act::SetNew | Act::Update => "nc",
            Act::Enum => "e",
            Act::EnumData | Act::GetTree | Act::Watch => "exr",
            Act::DeleteTree => "xde",
            Act::MsgSend => "xw",
            Act::MsgMonitor => "xr",
            Act::TestAcl => "xa",
            // Never for a user bound to an ACL.
            Act::Admin => ALL,
        }
    }

    fn reads(self) -> bool {
        matches!(
            self,
            Act::GetValue
                | Act::GetByTick
                | Act::EnumData
                | Act::GetTree
                | Act::Watch
                | Act::MsgMonitor
        )
    }
}

/// What an action achieved: whether all of it worked, and the data values
/// it was shown.
struct Seen {
    full: bool,
    values: Vec<Value>,
}

impl Seen {
    fn refused_or(r: &Value, f: impl FnOnce(&Value) -> Seen) -> Seen {
        if r.get("error").is_some() {
            Seen {
                full: false,
                values: Vec::new(),
            }
        } else {
            f(r)
        }
    }
}

fn pv(p: Path) -> (&'static str, Value) {
    ("path", Value::Path(p))
}

fn values_of(msgs: &[Value]) -> Vec<Value> {
    msgs.iter()
        .filter_map(|m| m.get("value").cloned())
        .collect()
}

/// A node with the users `mu` (bound to ACL `m`) and `free` (no ACL),
/// the `password` method switched on, and an admin connection opened
/// before that (so it needs no login).
struct Rig {
    node: ClusterNode,
    admin: Raw,
    /// Ticks for `update` events of a node that is gone.
    gone_tick: u64,
    /// Marks set outside `zone` (watch).
    marks: u64,
    /// Names used for new entries.
    fresh: u64,
}

impl Rig {
    async fn start() -> Result<Rig> {
        let node = ClusterNode::start("acl1", vec![]).await?;
        let mut admin = Raw::connect(node.addr).await?;
        admin.add_password_user("mu", "secret-m").await?;
        admin.add_password_user("free", "secret-f").await?;
        admin
            .call_ok(
                "set_internal",
                vec![
                    pv(path!["auth", "password", "user", "mu", "acl"]),
                    ("value", Value::map([("key", Value::str("m"))])),
                ],
            )
            .await?;
        admin
            .call_ok("set_auth_typ", vec![("typ", Value::str("password"))])
            .await?;
        Ok(Rig {
            node,
            admin,
            gone_tick: 0,
            marks: 0,
            fresh: 0,
        })
    }

    async fn login(&self, user: &str) -> Result<Raw> {
        let mut c = Raw::connect(self.node.addr).await?;
        let password = if user == "mu" { "secret-m" } else { "secret-f" };
        c.login_password(user, password).await?;
        Ok(c)
    }

    /// ACL `m` gives `flags` to `zone` and everything below it.
    async fn set_flags(&mut self, flags: &str) -> Result<()> {
        for pattern in [path!["acl", "m", "zone"], path!["acl", "m", "zone", "#"]] {
            self.admin
                .call_ok(
                    "set_internal",
                    vec![pv(pattern), ("value", Value::str(flags))],
                )
                .await?;
        }
        Ok(())
    }

    /// `zone.a` = 1, `zone.a.b` = 2, nothing else below `zone`.
    async fn seed(&mut self) -> Result<()> {
        self.admin
            .call_ok("delete_tree", vec![pv(path!["zone"])])
            .await?;
        for (p, v) in [(path!["zone", "a"], 1), (path!["zone", "a", "b"], 2)] {
            self.admin
                .call_ok("set_value", vec![pv(p), ("value", Value::Int(v))])
                .await?;
        }
        Ok(())
    }

    /// The values below `zone`, as the admin sees them.
    async fn zone(&mut self) -> Result<Vec<(Vec<Value>, Value)>> {
        let seq = self
            .admin
            .request("get_tree", vec![pv(path!["zone"])])
            .await?;
        let msgs = self.admin.recv_stream(seq).await?;
        ensure!(msgs.iter().all(|m| m.get("error").is_none()), "{msgs:?}");
        let data: Vec<Value> = msgs.into_iter().filter(|m| state_of(m).is_none()).collect();
        Ok(lengthen(&[], &data)?
            .into_iter()
            .zip(
                data.iter()
                    .map(|m| m.get("value").cloned().unwrap_or(Value::Nil)),
            )
            .collect())
    }

    /// Runs `act` as `user` (a logged-in connection; streams get their
    /// own).
    async fn run(&mut self, act: Act, user: &mut Raw, name: &str) -> Result<Seen> {
        let zone_a = path!["zone", "a"];
        Ok(match act {
            Act::GetValue => {
                let r = user.call("get_value", vec![pv(zone_a)]).await?;
                Seen::refused_or(&r, |r| Seen {
                    full: r.get("value") == Some(&Value::Int(1)),
                    values: values_of(std::slice::from_ref(r)),
                })
            }
            Act::GetByTick => {
                let r = self
                    .admin
                    .call_ok("get_value", vec![pv(zone_a), ("nchain", Value::Int(1))])
                    .await?;
                let chain = field(&r, "chain")?;
                let (node, tick) = (field(chain, "node")?.clone(), head_tick(chain)?);
                let r = user
                    .call(
                        "get_value",
                        vec![("node", node), ("tick", Value::uint(tick))],
                    )
                    .await?;
                Seen::refused_or(&r, |r| Seen {
                    full: r.get("value") == Some(&Value::Int(1)),
                    values: values_of(std::slice::from_ref(r)),
                })
            }
            Act::SetExisting | Act::SetNew => {
                // Deleted entries stay in the tree (stepping into them
                // needs `x`): a name never used before.
                self.fresh += 1;
                let p = if act == Act::SetNew {
                    path!["zone", format!("new{}", self.fresh)]
                } else {
                    zone_a
                };
                let r = user
                    .call("set_value", vec![pv(p), ("value", Value::Int(10))])
                    .await?;
                Seen::refused_or(&r, |_| Seen {
                    full: true,
                    values: Vec::new(),
                })
            }
            Act::DeleteValue => {
                let r = user.call("delete_value", vec![pv(zone_a)]).await?;
                Seen::refused_or(&r, |r| Seen {
                    full: r.get("changed") == Some(&Value::Bool(true)),
                    values: Vec::new(),
                })
            }
            Act::Enum => {
                let r = user.call("enum", vec![pv(path!["zone"])]).await?;
                Seen::refused_or(&r, |r| Seen {
                    full: r.get("result") == Some(&arr(["a"])),
                    values: Vec::new(),
                })
            }
            Act::EnumData => {
                let r = user
                    .call(
                        "enum",
                        vec![pv(path!["zone"]), ("with_data", Value::Bool(true))],
                    )
                    .await?;
                Seen::refused_or(&r, |r| {
                    let got = r.get("result").and_then(Value::as_map).unwrap_or(&[]);
                    Seen {
                        full: got == [(Value::str("a"), Value::Int(1))],
                        values: got.iter().map(|(_, v)| v.clone()).collect(),
                    }
                })
            }
            Act::GetTree => {
                let seq = user.request("get_tree", vec![pv(path!["zone"])]).await?;
                let msgs = user.recv_stream(seq).await?;
                let values = values_of(&msgs);
                Seen {
                    full: msgs.iter().all(|m| m.get("error").is_none())
                        && values == [Value::Int(1), Value::Int(2)],
                    values,
                }
            }
            Act::Watch => self.watch(name).await?,
            Act::DeleteTree => {
                let r = user.call("delete_tree", vec![pv(zone_a)]).await?;
                Seen::refused_or(&r, |r| Seen {
                    full: r.get("changed") == Some(&Value::Int(2)),
                    values: Vec::new(),
                })
            }
            Act::Update => {
                self.gone_tick += 1;
                let tock = self.admin.call_ok("get_tock", vec![]).await?;
                let r = user
                    .call(
                        "update",
                        vec![
                            pv(path!["zone", format!("u{}", self.gone_tick)]),
                            ("value", Value::Int(5)),
                            ("tock", field(&tock, "tock")?.clone()),
                            ("node", Value::str("gone")),
                            ("tick", Value::uint(self.gone_tick)),
                            ("prev", Value::Nil),
                        ],
                    )
                    .await?;
                Seen::refused_or(&r, |_| Seen {
                    full: true,
                    values: Vec::new(),
                })
            }
            Act::MsgSend => {
                let r = user
                    .call(
                        "msg_send",
                        vec![("topic", Value::str("zone/t")), ("data", Value::Int(7))],
                    )
                    .await?;
                Seen::refused_or(&r, |_| Seen {
                    full: true,
                    values: Vec::new(),
                })
            }
            Act::MsgMonitor => self.monitor(name).await?,
            Act::TestAcl => {
                let r = user.call("test_acl", vec![pv(zone_a)]).await?;
                Seen::refused_or(&r, |r| Seen {
                    // The flags where the ACL lets the user see them; an
                    // unrestricted user sees `true`.
                    full: r.get("access") != Some(&Value::Bool(false)),
                    values: Vec::new(),
                })
            }
            Act::Admin => {
                let mut worked = 0;
                let tries: [(&str, Vec<(&str, Value)>); 4] = [
                    ("get_internal", vec![pv(path!["acl", "m", "zone"])]),
                    (
                        "set_internal",
                        vec![pv(path!["acl", "m", "zone"]), ("value", Value::str(ALL))],
                    ),
                    (
                        "set_value",
                        vec![
                            (
                                "path",
                                Value::Array(vec![
                                    Value::Nil,
                                    Value::str("acl"),
                                    Value::str("m"),
                                    Value::str("elsewhere"),
                                ]),
                            ),
                            ("value", Value::str("r")),
                        ],
                    ),
                    (
                        "auth_list",
                        vec![("typ", Value::str("password")), ("ident", Value::str("mu"))],
                    ),
                ];
                let n = tries.len();
                for (action, fields) in tries {
                    let r = user.call(action, fields).await?;
                    if r.get("error").is_none() {
                        worked += 1;
                    }
                }
                // Put the ACL back if that went through.
                Seen {
                    full: worked == n,
                    values: Vec::new(),
                }
            }
        })
    }

    /// `watch` on the root with `fetch` on a connection of its own: the
    /// initial state, then a change the admin makes below `zone`, and one
    /// outside it that tells the change has passed.
    async fn watch(&mut self, name: &str) -> Result<Seen> {
        let mut c = self.login(name).await?;
        let seq = c
            .request("watch", vec![pv(path![]), ("fetch", Value::Bool(true))])
            .await?;
        let mut msgs = Vec::new();
        let read = |m: Value, msgs: &mut Vec<Value>| -> Result<bool> {
            ensure!(seq_of(&m) == Some(seq), "{m}");
            ensure!(m.get("error").is_none(), "{m}");
            Ok(match state_of(&m) {
                Some("uptodate") => true,
                Some("end") => bail!("the watch ended: {msgs:?}"),
                Some(_) => false,
                None => {
                    msgs.push(m);
                    false
                }
            })
        };
        while !read(c.recv().await?, &mut msgs)? {}
        self.marks += 1;
        for (p, v) in [
            (path!["zone", "a", "b"], 3),
            (path!["free", "mark"], self.marks as i64),
        ] {
            self.admin
                .call_ok("set_value", vec![pv(p), ("value", Value::Int(v))])
                .await?;
        }
        let mark = vec![Value::str("free"), Value::str("mark")];
        loop {
            read(c.recv().await?, &mut msgs)?;
            let paths = lengthen(&[], &msgs)?;
            if paths.last() == Some(&mark)
                && msgs.last().and_then(|m| m.get("value")) == Some(&Value::uint(self.marks))
            {
                let zone: Vec<(Vec<Value>, Option<Value>)> = paths
                    .into_iter()
                    .zip(msgs.iter().map(|m| m.get("value").cloned()))
                    .filter(|(p, _)| p.first() == Some(&Value::str("zone")))
                    .collect();
                let a = vec![Value::str("zone"), Value::str("a")];
                let b = vec![Value::str("zone"), Value::str("a"), Value::str("b")];
                let want = [
                    (a, Some(Value::Int(1))),
                    (b.clone(), Some(Value::Int(2))),
                    (b, Some(Value::Int(3))),
                ];
                return Ok(Seen {
                    full: zone == want,
                    values: zone.into_iter().filter_map(|(_, v)| v).collect(),
                });
            }
        }
    }

    /// `msg_monitor` of `+/t` on a connection of its own, while the admin
    /// sends to `zone/t` (which the ACL governs) and `free/t` (which no
    /// pattern matches): until `free/t` came three times, and `zone/t`
    /// too if it comes at all.
    async fn monitor(&mut self, name: &str) -> Result<Seen> {
        let mut c = self.login(name).await?;
        let seq = c
            .request("msg_monitor", vec![("topic", Value::str("+/t"))])
            .await?;
        let start = c.recv().await?;
        ensure!(state_of(&start) == Some("start"), "{start}");
        let (mut free, mut zone) = (0, Vec::new());
        let t0 = std::time::Instant::now();
        while free < 3 || (zone.is_empty() && t0.elapsed() < DEADLINE) {
            ensure!(t0.elapsed() < 2 * DEADLINE, "no messages on the monitor");
            for (topic, data) in [("zone/t", 8), ("free/t", 9)] {
                self.admin
                    .call_ok(
                        "msg_send",
                        vec![("topic", Value::str(topic)), ("data", Value::Int(data))],
                    )
                    .await?;
            }
            // Whatever arrives within a moment; the subscription reaches
            // the broker asynchronously.
            while let Ok(m) = tokio::time::timeout(Duration::from_millis(100), c.recv()).await {
                let m = m?;
                ensure!(seq_of(&m) == Some(seq), "{m}");
                match m.get("data") {
                    Some(Value::Int(9)) => free += 1,
                    Some(v) => zone.push(v.clone()),
                    None => bail!("unexpected {m}"),
                }
            }
        }
        Ok(Seen {
            full: !zone.is_empty(),
            values: zone,
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_action_with_every_letter_taken_away() -> Result<()> {
    let mut rig = Rig::start().await?;
    let mut failures = Vec::new();
    let rounds: Vec<Option<char>> = ALL.chars().map(Some).chain([None]).collect();
    for missing in rounds {
        // `None`: all letters, then the unrestricted user.
        let flags: String = ALL.chars().filter(|c| Some(*c) != missing).collect();
        rig.set_flags(&flags).await?;
        let names: &[&str] = if missing.is_some() {
            &["mu"]
        } else {
            &["mu", "free"]
        };
        for name in names {
            let mut user = rig.login(name).await?;
            for act in Act::EVERY {
                rig.seed().await?;
                let seen = rig
                    .run(act, &mut user, name)
                    .await
                    .with_context(|| format!("{act:?} as {name} without {missing:?}"))?;
                let refused = missing.is_some_and(|l| act.needs().contains(l))
                    || (act == Act::Admin && *name == "mu");
                let case = format!("{act:?} as {name}, flags {flags:?}");
                if seen.full == refused {
                    failures.push(format!(
                        "{case}: {}",
                        if refused { "worked" } else { "did not work" }
                    ));
                }
                let hidden = matches!(missing, Some('r' | 'x'));
                if refused && act.reads() && hidden && !seen.values.is_empty() {
                    failures.push(format!("{case}: saw values {:?}", seen.values));
                }
                if refused && !act.reads() {
                    // Nothing changed, but what the ACL allowed: without
                    // `e`, delete_tree still deletes zone.a itself.
                    let zone = rig.zone().await?;
                    let want: &[(Vec<Value>, Value)] =
                        &if act == Act::DeleteTree && missing == Some('e') {
                            vec![(vec![Value::str("a"), Value::str("b")], Value::Int(2))]
                        } else {
                            vec![
                                (vec![Value::str("a")], Value::Int(1)),
                                (vec![Value::str("a"), Value::str("b")], Value::Int(2)),
                            ]
                        };
                    if zone != want {
                        failures.push(format!("{case}: the data changed: {zone:?}"));
                    }
                }
                if act == Act::Admin {
                    rig.set_flags(&flags).await?;
                }
            }
        }
    }
    ensure!(
        failures.is_empty(),
        "{} failures:
{}",
        failures.len(),
        failures.join(
            "
"
        )
    );
    Ok(())
}
