//! Values typed on the command line.

use distkv_model::Value;

/// Evaluates a Python-literal-like expression (`123`, `'x'`, `(1, 2)`,
/// `True`, `None`) as DistKV's restricted evaluator does.
pub fn parse_value(text: &str) -> anyhow::Result<Value> {
    Ok(distkv_model::pathfmt::eval(text)?)
}
