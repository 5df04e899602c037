//! Text tokenizers: a Hugging Face `tokenizer.json`, or a byte-level BPE rebuilt from its
//! parts (the vocabulary and merges a GGUF file carries).

use std::path::{Path, PathBuf};

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, Tokenizer};

use crate::{Error, Result};

/// A tokenizer whose vocabulary is known to fit the model it feeds.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    /// Where it came from, for error messages.
    source: PathBuf,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("source", &self.source)
            .field("vocab_size", &self.vocab_size())
            .finish()
    }
}

impl TextTokenizer {
    /// Load a Hugging Face `tokenizer.json` and check that its vocabulary (with added tokens)
    /// has exactly `model_vocab_size` entries.
    pub fn from_file(path: &Path, model_vocab_size: usize) -> Result<Self> {
        let inner = Tokenizer::from_file(path)
            .map_err(|e| Error::format(path, format!("not a readable tokenizer.json: {e}")))?;
        Self::new(inner, path, model_vocab_size)
    }

    /// Wrap a built tokenizer, checking its vocabulary size against the model's.
    pub fn new(
        inner: Tokenizer,
        source: impl Into<PathBuf>,
        model_vocab_size: usize,
    ) -> Result<Self> {
        let source = source.into();
        let size = inner.get_vocab_size(true);
        if size != model_vocab_size {
            return Err(Error::format(
                &source,
                format!(
                    "tokenizer has {size} tokens, the model's vocab_size is {model_vocab_size}"
                ),
            ));
        }
        Ok(Self { inner, source })
    }

    /// Token ids of `text`; `add_special_tokens` applies the tokenizer's post-processor
    /// (a BOS, for tokenizers that add one).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| Error::format(&self.source, format!("cannot encode {text:?}: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// The text of `ids`; special tokens are dropped when `skip_special_tokens`.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| Error::format(&self.source, format!("cannot decode {ids:?}: {e}")))
    }

    /// The id of a token string, e.g. `<|im_end|>`.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Number of tokens, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }
}

/// How a byte-level BPE splits text before merging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreSplit {
    /// GPT-2's regex only.
    Gpt2,
    /// Every digit on its own, then GPT-2's regex (SmolLM2, StarCoder).
    DigitsThenGpt2,
}

/// A GPT-2 style byte-level BPE from its vocabulary (token strings in byte-level alphabet,
/// id = index), its merges (`"a b"` pairs, by priority) and the ids of special tokens that
/// must never be split.
pub fn byte_level_bpe(
    tokens: &[String],
    merges: &[String],
    special_ids: &[u32],
    pre_split: PreSplit,
) -> Result<Tokenizer> {
    let vocab: Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let mut pairs = Vec::with_capacity(merges.len());
    for (i, m) in merges.iter().enumerate() {
        let (a, b) = m.split_once(' ').ok_or_else(|| {
            Error::config(
                format!("tokenizer.ggml.merges[{i}]"),
                format!("{m:?} is not a space-separated pair"),
            )
        })?;
        pairs.push((a.to_string(), b.to_string()));
    }
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, pairs)
        .build()
        .map_err(|e| Error::Model(format!("cannot build byte-level BPE: {e}")))?;
    let mut tok = Tokenizer::new(bpe);
    let byte_level = ByteLevel::new(false, true, true);
    let pre: PreTokenizerWrapper = match pre_split {
        PreSplit::Gpt2 => byte_level.into(),
        PreSplit::DigitsThenGpt2 => {
            Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into()
        }
    };
    tok.with_pre_tokenizer(Some(pre));
    tok.with_decoder(Some(ByteLevelDecoder::default()));
    let specials: Vec<AddedToken> = special_ids
        .iter()
        .filter_map(|&id| tokens.get(id as usize))
        .map(|t| AddedToken::from(t.clone(), true))
        .collect();
    tok.add_special_tokens(specials)
        .map_err(|e| Error::Model(format!("cannot add special tokens: {e}")))?;
    Ok(tok)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toy vocabulary: the byte-level letters, two merges and one special token.
    fn toy() -> Result<TextTokenizer> {
        let tokens: Vec<String> = ["<eos>", "a", "b", "Ġ", "ab", "Ġab", "1", "2"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let merges = vec!["a b".to_string(), "Ġ ab".to_string()];
        let tok = byte_level_bpe(&tokens, &merges, &[0], PreSplit::DigitsThenGpt2)?;
        TextTokenizer::new(tok, "toy", tokens.len())
    }

    #[test]
    fn merges_specials_digits_and_round_trip() -> Result<()> {
        let tok = toy()?;
        assert_eq!(tok.encode("ab ab<eos>12", false)?, vec![4, 5, 0, 6, 7]);
        assert_eq!(tok.decode(&[4, 5, 6], false)?, "ab ab1");
        assert_eq!(tok.decode(&[4, 0], true)?, "ab");
        Ok(())
    }

    #[test]
    fn vocabulary_mismatch_and_bad_merges_are_errors() -> Result<()> {
        let tokens = vec!["a".to_string(), "b".to_string()];
        let tok = byte_level_bpe(&tokens, &[], &[], PreSplit::Gpt2)?;
        let err = TextTokenizer::new(tok, "toy.json", 3)
            .unwrap_err()
            .to_string();
        assert!(err.contains("toy.json") && err.contains('3'), "{err}");
        let err = byte_level_bpe(&tokens, &["ab".to_string()], &[], PreSplit::Gpt2)
            .unwrap_err()
            .to_string();
        assert!(err.contains("merges[0]"), "{err}");
        let err = TextTokenizer::from_file(Path::new("/nonexistent/tokenizer.json"), 2)
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/tokenizer.json"), "{err}");
        Ok(())
    }
}
