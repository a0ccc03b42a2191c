//! `distkv client type …` and `distkv client codec …` against an
//! in-process node: DistKV's typecheck and convert acceptance cases with
//! Rhai scripts, and hostile scripts that the node stops while it keeps
//! serving.

mod common;

use std::path::{Path, PathBuf};

use common::{texts, Node};

/// Writes `text` to `dir/name`; its path as a string.
fn file(dir: &Path, name: &str, text: &str) -> String {
    let p: PathBuf = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

const DECODE: &str =
    "if type_of(value) != \"string\" { throw \"not a string\" }\nparse_int(value)\n";
const ENCODE: &str = "value.to_string()\n";

/// DistKV's convert acceptance: codec `int`, converter group `foo` on
/// `inty.#`, user `con` bound to `foo` writes "10": 10 is stored, `con`
/// reads "10", an unconverted user 10.
#[test]
fn converted_users_see_their_codec() {
    let n = Node::start();
    let dir = tempfile::tempdir().unwrap();
    let dec = file(dir.path(), "dec.rhai", DECODE);
    let enc = file(dir.path(), "enc.rhai", ENCODE);
    n.ok_args(
        &[
            "codec", "set", "-e", &enc, "-d", &dec, "-i", "'1'", "1", "-o", "2", "'2'", "int",
        ],
        "",
    );
    n.ok("codec list :", "int\n");
    let out = n.run("codec convert foo inty.# -c int");
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.trim().parse::<u64>().is_ok(),
        "prints the tock: {stdout:?}"
    );
    n.ok("codec convert -l foo :", "inty.# : int\n");
    n.ok("codec convert -l - :", "foo\n");
    n.ok("codec convert foo inty.#", "int\n");
    n.ok(
        "auth -m password user add name=con password=con-pw",
        "con\n",
    );
    n.ok(
        "auth -m password user add name=boss password=boss-pw",
        "boss\n",
    );
    n.ok("auth -m password user param con conv foo", "con conv foo\n");
    n.ok(
        "auth -m password init",
        "Authorization switched to password\n",
    );
    let con = ["-a", "password name=con password=con-pw"];
    let boss = ["-a", "password name=boss password=boss-pw"];
    let as_ = |who: &[&str], rest: &[&str]| -> Vec<String> {
        who.iter().chain(rest).map(|s| s.to_string()).collect()
    };
    let ok = |who: &[&str], rest: &[&str], want: &str| {
        let args = as_(who, rest);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        n.ok_args(&args, want);
    };
    ok(&con, &["data", "inty.x", "set", "-v", ":", "10"], "");
    ok(&boss, &["data", "inty.x", "get"], "10\n");
    ok(&con, &["data", "inty.x", "get"], "'10'\n");
    ok(&con, &["data", "inty", "get", "-rd_"], "x:\n  _: '10'\n");
    ok(&boss, &["data", "inty", "get", "-rd_"], "x:\n  _: 10\n");
    let args = as_(&con, &["data", "inty.x", "set", "-e", ":", "11"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    n.fails_args(&args, 1, "ServerError: ValueError('not a string')");
    ok(&boss, &["data", "inty.x", "get"], "10\n");
    // Above the pattern, nothing is converted.
    ok(&con, &["data", "inty", "set", "-v", ":", "hello"], "");
    ok(&boss, &["data", "inty", "get"], "'hello'\n");
}

const INT: &str = "type_of(value) == \"i64\"\n";
const PERCENT: &str = "if value < 0 || value > 100 { throw \"not a percentage\" }\n";

/// DistKV's typecheck acceptance with our CLI: `int`, `int.percent`,
/// matched at `one.+.two`.
#[test]
fn types_check_values_at_their_matches() {
    let n = Node::start();
    let dir = tempfile::tempdir().unwrap();
    let int = file(dir.path(), "int.rhai", INT);
    let pct = file(dir.path(), "pct.rhai", PERCENT);
    n.ok_args(
        &[
            "type", "set", "-s", &int, "-g", "0", "-g", "1", "-g", "2", "-b", "'foo'", "-b",
            "None", "int",
        ],
        "",
    );
    n.ok_args(
        &[
            "type",
            "set",
            "-s",
            &pct,
            "-g",
            "0",
            "-g",
            "55",
            "-g",
            "100",
            "-b",
            "-1",
            "-b",
            "101",
            "int.percent",
        ],
        "",
    );
    n.ok("type match -t int.percent one.+.two", "");
    n.ok("type match one.+.two", "int percent\n");
    n.ok(
        "type match :",
        "one:\n  +:\n    two:\n      _:\n        type: !P int.percent\n",
    );
    n.ok("data one.y.two set -e : 99", "");
    n.fails(
        "data one.y.two set -e : 9.9",
        1,
        "ServerError: ValueError('9.9 is not a int')",
    );
    n.fails(
        "data one.y.two set -v : zoz",
        1,
        "ServerError: ValueError(\"'zoz' is not a int\")",
    );
    n.fails(
        "data one.y.two set -e : 101",
        1,
        "ServerError: ValueError('not a percentage')",
    );
    n.ok("data one.y set -v : zoz", "");
    n.ok("data one.y.two get", "99\n");
    // The definition rules.
    n.fails_args(
        &[
            "type", "set", "-s", &pct, "-g", "5", "-g", "500", "-b", "101", "int.p2",
        ],
        1,
        "ServerError: ValueError('failed on good value 500')",
    );
    n.fails_args(
        &[
            "type", "set", "-s", &pct, "-g", "5", "-g", "6", "-b", "7", "int.p2",
        ],
        1,
        "ServerError: ValueError('did not fail on 7')",
    );
    n.fails(
        "type match -t nope a.b",
        1,
        "ServerError: ClientError('This type does not exist')",
    );
    n.fails(
        "type set -g 1 -g 2 -b 3 x",
        2,
        "error: I need a schema, a script, or both.",
    );
    let out = n.run(&format!(
        "type get int -s {}/back.rhai",
        dir.path().display()
    ));
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.starts_with("bad:\n- foo\n- null\n"), "{stdout}");
    assert!(
        !stdout.contains("code"),
        "the code went to the file: {stdout}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("back.rhai")).unwrap(),
        INT
    );
    // Deleting the match lifts the check.
    n.ok("type match -d one.+.two", "");
    n.ok("data one.y.two set -e : 9.9", "");
}

/// A JSON-schema type, as the README shows it: `-S FILE` in, `get -S`
/// writes the schema back as JSON.
#[test]
fn schema_types_from_json_files() {
    let n = Node::start();
    let dir = tempfile::tempdir().unwrap();
    let schema = file(
        dir.path(),
        "num.json",
        "{\"type\": \"integer\", \"minimum\": 3}",
    );
    n.ok_args(
        &[
            "type", "set", "-S", &schema, "-g", "3", "-g", "5", "-b", "'x'", "num",
        ],
        "",
    );
    n.ok("type match -t num numbers.#", "");
    n.ok("data numbers.a set -e : 4", "");
    n.fails(
        "data numbers.a set -e : 2",
        1,
        "ServerError: ValidationError('2 is less than the minimum of 3')",
    );
    let back = dir.path().join("back.json");
    let out = n.run(&format!("type get num -S {}", back.display()));
    assert!(out.status.success(), "{}", texts(&out).1);
    let text = std::fs::read_to_string(&back).unwrap();
    assert_eq!(
        text, "{\"minimum\":3,\"type\":\"integer\"}",
        "compact, keys sorted"
    );
}

/// Scripts that loop, recurse or grow without end are stopped by their
/// limits; the definition is refused and the node keeps serving.
#[test]
fn hostile_scripts_are_stopped_and_the_node_serves_on() {
    let n = Node::start();
    let dir = tempfile::tempdir().unwrap();
    for (name, code, why) in [
        ("endless", "loop { }\n", "Too many operations"),
        ("deep", "fn f(x) { f(x + 1) }\nf(0)\n", "Stack overflow"),
        ("huge", "let s = \"x\";\nloop { s += s; }\n", "too large"),
    ] {
        let f = file(dir.path(), &format!("{name}.rhai"), code);
        n.fails_args(
            &[
                "type", "set", "-s", &f, "-g", "1", "-g", "2", "-b", "3", name,
            ],
            1,
            "ServerError: ValueError('failed on good value 1')",
        );
        n.ok("data : get", "'Testing'\n");
        // As a codec, the run's own error is named.
        let c = file(dir.path(), &format!("{name}.c.rhai"), code);
        let out = n.run_args(
            &[
                "codec", "set", "-e", &c, "-d", &c, "-i", "1", "1", "-o", "1", "1", name,
            ],
            "",
        );
        let (_, stderr) = texts(&out);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(why), "{name}: {stderr}");
        n.ok("data : get", "'Testing'\n");
    }
}
