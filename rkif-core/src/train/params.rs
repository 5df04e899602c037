//! What the optimiser and the gradient helpers accept as a trainable tensor: a name and a `Var`.

use candle_core::Var;

use crate::model::LoraParam;

/// A trainable tensor with a stable name (the name keys its gradient and optimiser state).
pub trait NamedParam {
    fn param_name(&self) -> &str;
    fn param_var(&self) -> &Var;
}

impl NamedParam for LoraParam {
    fn param_name(&self) -> &str {
        &self.name
    }
    fn param_var(&self) -> &Var {
        &self.var
    }
}

impl NamedParam for (String, Var) {
    fn param_name(&self) -> &str {
        &self.0
    }
    fn param_var(&self) -> &Var {
        &self.1
    }
}
