//! GGUF loading (in progress).
