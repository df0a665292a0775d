//! Llama 3.x model: config, tokenizer, sampler, forward pass (work in progress).
