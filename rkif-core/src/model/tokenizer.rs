//! Tokenizers (in progress).
