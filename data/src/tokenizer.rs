//! The DeepSeek-V4 tokenizer: HF `tokenizer.json` loaded with the `tokenizers`
//! crate, encoding without added special tokens (BOS/EOS come from the chat
//! encoding or the packer, never from the tokenizer).

use crate::chat_templates::{BOS, EOS};
use crate::error::DataError;
use std::path::{Path, PathBuf};
use tokenizers::Tokenizer;

/// `[start, end)` byte range of a token in the encoded text.
pub type ByteSpan = (usize, usize);

/// A loaded V4 tokenizer.
pub struct V4Tokenizer {
    inner: Tokenizer,
    path: PathBuf,
    bos_id: u32,
    eos_id: u32,
}

impl std::fmt::Debug for V4Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("V4Tokenizer")
            .field("path", &self.path)
            .field("bos_id", &self.bos_id)
            .field("eos_id", &self.eos_id)
            .finish()
    }
}

impl V4Tokenizer {
    /// Loads `tokenizer.json` from a model or tokenizer directory (or the file itself).
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self, DataError> {
        let dir = dir.as_ref();
        if dir.is_file() {
            Self::from_file(dir)
        } else {
            Self::from_file(dir.join("tokenizer.json"))
        }
    }

    /// Loads a `tokenizer.json` file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, DataError> {
        let path = path.as_ref().to_path_buf();
        let bytes = std::fs::read(&path).map_err(|source| DataError::Io {
            path: path.clone(),
            source,
        })?;
        let inner = Tokenizer::from_bytes(&bytes).map_err(|e| DataError::TokenizerLoad {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let special = |token: &str| {
            inner
                .token_to_id(token)
                .ok_or_else(|| DataError::TokenizerLoad {
                    path: path.clone(),
                    message: format!("special token `{token}` is not in the vocabulary"),
                })
        };
        let bos_id = special(BOS)?;
        let eos_id = special(EOS)?;
        Ok(V4Tokenizer {
            inner,
            path,
            bos_id,
            eos_id,
        })
    }

    /// The `tokenizer.json` this was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Id of `<｜begin▁of▁sentence｜>`.
    pub fn bos_id(&self) -> u32 {
        self.bos_id
    }

    /// Id of `<｜end▁of▁sentence｜>` (also used as padding).
    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Id of a token string, if it is in the vocabulary.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    fn error(&self, e: impl std::fmt::Display) -> DataError {
        DataError::Tokenize {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    /// Token ids of `text` (no special tokens added).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, DataError> {
        let enc = self
            .inner
            .encode_fast(text, false)
            .map_err(|e| self.error(e))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Token ids of `text` with the byte range of `text` each token covers.
    pub fn encode_with_offsets(&self, text: &str) -> Result<(Vec<u32>, Vec<ByteSpan>), DataError> {
        let enc = self.inner.encode(text, false).map_err(|e| self.error(e))?;
        Ok((enc.get_ids().to_vec(), enc.get_offsets().to_vec()))
    }

    /// Text of `ids` (special tokens kept).
    pub fn decode(&self, ids: &[u32]) -> Result<String, DataError> {
        self.inner.decode(ids, false).map_err(|e| self.error(e))
    }
}
