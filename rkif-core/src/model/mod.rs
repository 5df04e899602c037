//! Backbones with LoRA: the frozen-weight linear op, `LoraLinear`, T5 and LLaMA, loading
//! (local folder, hub, GGUF), greedy generation and the PEFT adapter files.

pub mod adapter;
pub mod backbone;
pub mod checkpoint;
pub mod embedded;
pub mod frozen;
pub mod gguf;
mod hand_backward;
pub mod llama;
pub mod lora;
pub(crate) mod norm;
pub(crate) mod softmax;
pub mod t5;
pub(crate) mod tensor_file;
pub mod tokenizer;

pub use checkpoint::Weights;
pub use lora::{LoraConfig, LoraLinear, SharedRng};

use candle_core::Var;

/// Which LoRA factor a trainable tensor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LoraFactor {
    /// `lora_A`, `[r, in]`.
    A,
    /// `lora_B`, `[out, r]`.
    B,
}

/// One trainable LoRA tensor with its PEFT runtime name
/// (`base_model.model.<module>.lora_A.default.weight`).
#[derive(Debug, Clone)]
pub struct LoraParam {
    pub name: String,
    /// The adapted module's Hugging Face path, e.g. `model.layers.0.self_attn.q_proj`.
    pub module: String,
    pub factor: LoraFactor,
    pub var: Var,
}

/// PEFT's runtime parameter name of a LoRA factor of `module`.
pub fn peft_runtime_name(module: &str, factor: LoraFactor) -> String {
    let f = match factor {
        LoraFactor::A => "lora_A",
        LoraFactor::B => "lora_B",
    };
    format!("base_model.model.{module}.{f}.default.weight")
}

/// A model whose only trainable tensors are LoRA factors.
pub trait LoraModel {
    /// Every linear layer that carries (or may carry) an adapter, in the model's module
    /// order (the order of PyTorch's `named_parameters`).
    fn lora_layers(&self) -> Vec<&LoraLinear>;

    /// The same layers, mutable (to attach, replace or fuse adapters).
    fn lora_layers_mut(&mut self) -> Vec<&mut LoraLinear>;

    /// The trainable tensors, A then B per adapted layer, in module order.
    fn lora_params(&self) -> Vec<LoraParam> {
        let mut out = Vec::new();
        for layer in self.lora_layers() {
            if let Some(ad) = layer.adapter() {
                for (factor, var) in [(LoraFactor::A, &ad.a), (LoraFactor::B, &ad.b)] {
                    out.push(LoraParam {
                        name: peft_runtime_name(layer.name(), factor),
                        module: layer.name().to_string(),
                        factor,
                        var: var.clone(),
                    });
                }
            }
        }
        out
    }
}
