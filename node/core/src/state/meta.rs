//! What the meta tree's fixed places may hold (docs/compat.md, "Meta
//! data rules").
//!
//! The roots `(None,"acl")`, `(None,"codec")`, `(None,"conv")`,
//! `(None,"match")` and `(None,"type")`, and a converter group
//! `(None,"conv",GROUP)`, hold no data. An ACL's entries
//! `(None,"acl",NAME,…)` hold strings of the mode letters `rwcdxena`.
//! DistKV refuses the same values (it checks ACL values only for being
//! strings; the letters are our addition, as ACLs with letters nobody
//! checks would only seem to protect).

use distkv_model::Value;

use super::acl;

/// Why a value may not be stored at a meta path: DistKV's exception and
/// its message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct MetaError {
    /// The Python exception class DistKV raises (`ValueError`).
    pub class: &'static str,
    /// Its message.
    pub message: String,
}

fn value_error(message: impl Into<String>) -> MetaError {
    MetaError {
        class: "ValueError",
        message: message.into(),
    }
}

/// Roots of the meta tree that hold no data themselves.
const DATALESS_ROOTS: [&str; 5] = ["acl", "codec", "conv", "match", "type"];

/// Whether `value` (`None`: a deletion) may be stored at `path`. Paths
/// outside the meta tree's fixed places are not concerned.
pub fn check(path: &[Value], value: Option<&Value>) -> Result<(), MetaError> {
    let Some(value) = value else {
        return Ok(());
    };
    let [Value::Nil, Value::Str(root), rest @ ..] = path else {
        return Ok(());
    };
    if !DATALESS_ROOTS.contains(&&**root) {
        return Ok(());
    }
    match (&**root, rest.len()) {
        (_, 0) | ("conv", 1) => Err(value_error("This node can't have data.")),
        ("acl", _) => match value {
            Value::Str(flags) if acl::valid_flags(flags) => Ok(()),
            Value::Str(flags) => Err(value_error(format!(
                "ACL {flags:?} has letters other than {:?}",
                acl::LETTERS
            ))),
            _ => Err(value_error("ACL is not a string")),
        },
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(elems: &[&str]) -> Vec<Value> {
        std::iter::once(Value::Nil)
            .chain(elems.iter().map(|e| Value::str(e)))
            .collect()
    }

    #[test]
    fn roots_and_converter_groups_hold_no_data() {
        for root in DATALESS_ROOTS {
            let e = check(&meta(&[root]), Some(&Value::Int(1))).unwrap_err();
            assert_eq!(e.message, "This node can't have data.", "{root}");
            assert_eq!(check(&meta(&[root]), None), Ok(()), "deleting is fine");
        }
        assert!(check(&meta(&["conv", "g"]), Some(&Value::Int(1))).is_err());
        assert_eq!(
            check(&meta(&["conv", "g", "x"]), Some(&Value::Int(1))),
            Ok(())
        );
        assert_eq!(check(&meta(&["type", "t"]), Some(&Value::Int(1))), Ok(()));
    }

    #[test]
    fn acl_entries_hold_mode_letters() {
        let acl = meta(&["acl", "foo", "one"]);
        assert_eq!(check(&acl, Some(&Value::str("rwcdxena"))), Ok(()));
        assert_eq!(
            check(&meta(&["acl", "foo"]), Some(&Value::str("r"))),
            Ok(())
        );
        let e = check(&acl, Some(&Value::str("rwq"))).unwrap_err();
        assert!(e.message.contains("\"rwq\""), "{e}");
        let e = check(&acl, Some(&Value::Int(3))).unwrap_err();
        assert_eq!(e.message, "ACL is not a string");
    }

    #[test]
    fn the_user_tree_and_other_meta_places_are_not_concerned() {
        let v = Some(&Value::Int(1));
        assert_eq!(check(&[Value::str("acl")], v), Ok(()));
        assert_eq!(check(&meta(&["auth"]), v), Ok(()));
        assert_eq!(check(&[], v), Ok(()));
        assert_eq!(check(&[Value::Nil, Value::Int(1)], v), Ok(()));
    }
}
