"""Check that Python PEFT loads an adapter folder written by rkif.

Usage: python scripts/check_peft_load.py BASE_MODEL_DIR ADAPTER_DIR

Loads the base model with transformers, the adapter with PeftModel.from_pretrained, and
checks that every LoRA tensor PEFT holds equals the one in adapter_model.safetensors.
Needs torch, transformers, peft and safetensors (not part of the test suite's installs).
"""
import sys

import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

base_dir, adapter_dir = sys.argv[1], sys.argv[2]
config = AutoConfig.from_pretrained(base_dir)
cls = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
model = PeftModel.from_pretrained(cls.from_pretrained(base_dir), adapter_dir)
stored = load_file(f"{adapter_dir}/adapter_model.safetensors")
params = dict(model.named_parameters())
checked = 0
for key, value in stored.items():
    runtime = key.replace(".lora_A.weight", ".lora_A.default.weight").replace(
        ".lora_B.weight", ".lora_B.default.weight"
    )
    if runtime not in params:
        sys.exit(f"PEFT has no parameter {runtime}")
    if not torch.equal(params[runtime].detach(), value):
        sys.exit(f"{runtime} differs from the file")
    checked += 1
ids = torch.tensor([[1, 5, 6, 7]])
with torch.no_grad():
    out = model(input_ids=ids) if not config.is_encoder_decoder else None
print(f"PEFT loaded {checked} LoRA tensors from {adapter_dir}; forward ok: {out is not None or config.is_encoder_decoder}")
