//! T5 tokenizers: loading a model directory's tokenizer (`tokenizer.json`, or a SentencePiece
//! `spiece.model` as the paper's hub checkpoints ship it, see [`load_dir`]) with the checks T5
//! needs, and training a new Unigram tokenizer (the model family of T5's SentencePiece) on
//! question/answer text.
//!
//! Files we write are plain `tokenizers` JSON, so `PreTrainedTokenizerFast(tokenizer_file=...)`
//! and `T5TokenizerFast.from_pretrained(dir)` load them and give the same ids as the Rust crate.

mod charsmap;
mod hf_config;
mod sp_proto;
mod spiece;

pub use spiece::load_spiece;

use crate::error::{BoxError, Error, Result};
use crate::pyjson::to_python_json;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use tokenizers::models::unigram::{Unigram, UnigramTrainer};
use tokenizers::normalizers::{replace::Replace, unicode::NFKC, NormalizerWrapper, Sequence};
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{
    AddedToken, DecoderWrapper, PostProcessorWrapper, PreTokenizerWrapper, Tokenizer, TokenizerImpl,
};

/// The three special tokens every T5 tokenizer must have, at these ids.
pub(crate) const SPECIALS: [(&str, u32); 3] = [("<pad>", 0), ("</s>", 1), ("<unk>", 2)];

/// Load `tokenizer.json` and check it has T5's `<pad>`=0, `</s>`=1 and `<unk>`=2.
pub fn load(path: &Path) -> Result<Tokenizer> {
    if !path.exists() {
        return Err(Error::Tokenizer {
            path: path.to_path_buf(),
            msg: "file not found (a T5 checkpoint needs a tokenizer.json)".into(),
        });
    }
    let tok = Tokenizer::from_file(path).map_err(|e| Error::Tokenizer {
        path: path.to_path_buf(),
        msg: format!("cannot load: {e}"),
    })?;
    check_specials(&tok).map_err(|msg| Error::Tokenizer {
        path: path.to_path_buf(),
        msg,
    })?;
    Ok(tok)
}

/// The file a model directory's tokenizer was built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenizerFile {
    /// A `tokenizers` JSON file (`tokenizer.json`).
    Json(PathBuf),
    /// A SentencePiece model (`spiece.model`), read with `tokenizer_config.json` beside it.
    SentencePiece(PathBuf),
}

impl TokenizerFile {
    /// The path of the file.
    pub fn path(&self) -> &Path {
        match self {
            TokenizerFile::Json(p) | TokenizerFile::SentencePiece(p) => p,
        }
    }
}

/// Load the tokenizer of model directory `dir`: `tokenizer.json` when there is one, else
/// `spiece.model` with `tokenizer_config.json` (built as transformers' `T5TokenizerFast` converts
/// it, see [`load_spiece`]). Either way it is checked for T5's special tokens; the second value
/// says which file was read.
pub fn load_dir(dir: &Path) -> Result<(Tokenizer, TokenizerFile)> {
    let json = dir.join("tokenizer.json");
    let spm = dir.join("spiece.model");
    if json.exists() {
        Ok((load(&json)?, TokenizerFile::Json(json)))
    } else if spm.exists() {
        let tok = load_spiece(&spm, &dir.join("tokenizer_config.json"))?;
        Ok((tok, TokenizerFile::SentencePiece(spm)))
    } else {
        Err(Error::Tokenizer {
            path: json,
            msg: "file not found, nor a spiece.model beside it (a T5 checkpoint needs one of \
                  the two)"
                .into(),
        })
    }
}

/// T5's post-processor: `</s>` after each sequence.
fn t5_post_processor() -> Result<TemplateProcessing> {
    TemplateProcessing::builder()
        .try_single("$A </s>")
        .and_then(|b| b.try_pair("$A </s> $B </s>"))
        .map_err(|e| Error::tokenize("parse the post-processor template", e.into()))?
        .special_tokens(vec![("</s>", 1)])
        .build()
        .map_err(|e| Error::tokenize("build the post-processor", e.into()))
}

fn check_specials(tok: &Tokenizer) -> std::result::Result<(), String> {
    for (token, want) in SPECIALS {
        match tok.token_to_id(token) {
            Some(id) if id == want => {}
            Some(id) => {
                return Err(format!(
                    "special token {token} has id {id}, T5 expects {want}"
                ))
            }
            None => {
                return Err(format!(
                    "special token {token} is missing (T5 expects it at id {want})"
                ))
            }
        }
    }
    Ok(())
}

/// Options for training a tokenizer.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Total size of the vocabulary, sentinels included.
    pub vocab_size: u32,
    /// Number of `<extra_id_N>` sentinels appended at the top of the vocabulary (T5 has 100).
    pub extra_ids: u32,
}

/// Train a Unigram tokenizer on `texts`, shaped like T5's: NFKC normalisation, runs of spaces
/// collapsed, SentencePiece's `▁` word-boundary marker, `</s>` appended to every sequence, and
/// `<extra_id_0>` as the highest id (as in T5's vocabulary).
pub fn train<I, S>(texts: I, opts: &TrainOptions) -> Result<Tokenizer>
where
    I: Iterator<Item = S> + Send,
    S: AsRef<str> + Send,
{
    let base = opts
        .vocab_size
        .checked_sub(opts.extra_ids)
        .filter(|b| *b > SPECIALS.len() as u32 + 16)
        .ok_or_else(|| {
            Error::setting(
                "vocab_size",
                format!(
                    "{} is too small for {} sentinels plus the base vocabulary",
                    opts.vocab_size, opts.extra_ids
                ),
            )
        })?;
    let specials: Vec<AddedToken> = SPECIALS
        .iter()
        .map(|(t, _)| AddedToken::from(t.to_string(), true))
        .collect();
    let mut trainer = UnigramTrainer::builder()
        .show_progress(false)
        .vocab_size(base)
        .special_tokens(specials)
        .unk_token(Some("<unk>".into()))
        .build()
        .map_err(|e| Error::tokenize("build the Unigram trainer", e.into()))?;
    let normalizer = NormalizerWrapper::Sequence(Sequence::new(vec![
        NormalizerWrapper::NFKC(NFKC),
        NormalizerWrapper::Replace(
            Replace::new(
                tokenizers::normalizers::replace::ReplacePattern::Regex(" {2,}".into()),
                " ",
            )
            .map_err(|e| Error::tokenize("build the normalizer", e))?,
        ),
    ]));
    let metaspace = Metaspace::new('▁', PrependScheme::Always, true);
    let mut tk: TokenizerImpl<
        Unigram,
        NormalizerWrapper,
        PreTokenizerWrapper,
        PostProcessorWrapper,
        DecoderWrapper,
    > = TokenizerImpl::new(Unigram::default());
    tk.with_normalizer(Some(normalizer))
        .with_pre_tokenizer(Some(PreTokenizerWrapper::Metaspace(metaspace.clone())))
        .with_decoder(Some(DecoderWrapper::Metaspace(metaspace)));
    tk.train(&mut trainer, texts)
        .map_err(|e| Error::tokenize("train the vocabulary", e))?;
    let text = tk
        .to_string(false)
        .map_err(|e| Error::tokenize("serialise the trained tokenizer", e))?;
    let text = canonical_unigram(&text)?;
    let mut tok = Tokenizer::from_str(&text)
        .map_err(|e| Error::tokenize("reload the trained tokenizer", e))?;
    // Sentinels from the top down, so <extra_id_0> gets the highest id as in T5.
    let sentinels: Vec<AddedToken> = (0..opts.extra_ids)
        .rev()
        .map(|i| AddedToken::from(format!("<extra_id_{i}>"), true))
        .collect();
    tok.add_special_tokens(&sentinels);
    tok.with_post_processor(Some(PostProcessorWrapper::Template(t5_post_processor()?)));
    check_specials(&tok)
        .map_err(|m| Error::tokenize("give the trained tokenizer T5's special tokens", m.into()))?;
    Ok(tok)
}

/// The Unigram trainer sums floats in hash-map order, so the same input gives piece scores that
/// differ in the last bits from run to run (and, on near ties, a different piece order). Rounding
/// the scores to 10 significant digits and ordering pieces by (score, piece) after the special
/// tokens makes `cbqa init --train-tokenizer` reproducible byte for byte (checked by a test).
fn canonical_unigram(text: &str) -> Result<String> {
    let bad = |m: BoxError| Error::tokenize("order the trained vocabulary", m);
    let mut v: serde_json::Value = serde_json::from_str(text).map_err(|e| bad(e.into()))?;
    let vocab = v
        .pointer_mut("/model/vocab")
        .and_then(|x| x.as_array_mut())
        .ok_or_else(|| bad("no model.vocab".into()))?;
    let n_special = SPECIALS.len().min(vocab.len());
    let mut pieces: Vec<(String, f64)> = vocab[n_special..]
        .iter()
        .filter_map(|e| Some((e.get(0)?.as_str()?.to_string(), e.get(1)?.as_f64()?)))
        .collect();
    if pieces.len() != vocab.len() - n_special {
        return Err(bad("model.vocab entries must be [piece, score]".into()));
    }
    for p in &mut pieces {
        p.1 = format!("{:.9e}", p.1).parse().unwrap_or(p.1);
    }
    // The trainer appends the characters it must cover with made-up scores (the lowest score
    // minus 1e-4, 2e-4, ...) in hash-set order: give those scores to the characters in sorted
    // order instead.
    let mut singles: Vec<usize> = (0..pieces.len())
        .filter(|&i| pieces[i].0.chars().count() == 1)
        .collect();
    singles.sort_by(|&a, &b| pieces[a].1.total_cmp(&pieces[b].1));
    let mut chain = singles.len().min(1);
    while chain < singles.len()
        && ((pieces[singles[chain]].1 - pieces[singles[chain - 1]].1) - 1e-4).abs() < 1e-6
    {
        chain += 1;
    }
    let chain = &singles[..chain];
    let mut chars: Vec<String> = chain.iter().map(|&i| pieces[i].0.clone()).collect();
    chars.sort_by(|a, b| b.cmp(a)); // lowest score gets the largest char
    for (&i, c) in chain.iter().zip(chars) {
        pieces[i].0 = c;
    }
    pieces.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    vocab.truncate(n_special);
    vocab.extend(pieces.into_iter().map(|(p, s)| json!([p, s])));
    serde_json::to_string(&v).map_err(|e| bad(e.into()))
}

/// Write `tokenizer.json` plus the small files transformers' `AutoTokenizer` reads
/// (`tokenizer_config.json`, `special_tokens_map.json`) into `dir`.
pub fn save(tok: &Tokenizer, dir: &Path, model_max_length: usize) -> Result<()> {
    let path = dir.join("tokenizer.json");
    let text = tok.to_string(false).map_err(|e| Error::Tokenizer {
        path: path.clone(),
        msg: format!("cannot serialise: {e}"),
    })?;
    crate::fsutil::write_atomic(&path, text.as_bytes())?;
    let extra: Vec<String> = (0..)
        .map(|i| format!("<extra_id_{i}>"))
        .take_while(|t| tok.token_to_id(t).is_some())
        .collect();
    let specials = json!({
        "pad_token": "<pad>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "additional_special_tokens": extra,
    });
    let mut config = specials.clone();
    config["tokenizer_class"] = json!("T5Tokenizer");
    config["extra_ids"] = json!(0);
    config["model_max_length"] = json!(model_max_length);
    config["clean_up_tokenization_spaces"] = json!(false);
    crate::fsutil::write_atomic(
        &dir.join("special_tokens_map.json"),
        to_python_json(&specials).as_bytes(),
    )?;
    crate::fsutil::write_atomic(
        &dir.join("tokenizer_config.json"),
        to_python_json(&config).as_bytes(),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trained_tokenizer_is_t5_shaped() {
        let texts = [
            "who wrote the song i will always love you",
            "when did the first world war start",
            "where is the eiffel tower",
            "Dolly Parton",
            "28 July 1914",
            "Paris",
        ];
        let tok = train(
            texts.iter().cycle().take(600),
            &TrainOptions {
                vocab_size: 120,
                extra_ids: 4,
            },
        )
        .unwrap();
        assert_eq!(tok.token_to_id("<pad>"), Some(0));
        assert_eq!(tok.token_to_id("</s>"), Some(1));
        assert_eq!(tok.token_to_id("<unk>"), Some(2));
        let top = tok.get_vocab_size(true) as u32 - 1;
        assert_eq!(tok.token_to_id("<extra_id_0>"), Some(top));
        assert_eq!(tok.token_to_id("<extra_id_3>"), Some(top - 3));
        let enc = tok.encode("where is the eiffel tower", true).unwrap();
        assert_eq!(enc.get_ids().last(), Some(&1), "ends with </s>");
        assert!(!enc.get_ids()[..enc.len() - 1].contains(&1));
        let text = tok.decode(enc.get_ids(), true).unwrap();
        assert_eq!(text, "where is the eiffel tower");
    }
}
