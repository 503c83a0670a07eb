//! A T5 tokenizer built from a SentencePiece model (`spiece.model`) and `tokenizer_config.json`,
//! as the paper's hub checkpoints ship it (no `tokenizer.json`).
//!
//! It is the tokenizer transformers' `T5TokenizerFast.from_pretrained(dir)` builds by converting
//! the slow `T5Tokenizer` (`convert_slow_tokenizer.T5Converter`, transformers 4.57):
//! - model: Unigram over the pieces and their scores, then `extra_ids` sentinels with score 0
//!   (`<extra_id_0>` highest), unknown id `trainer_spec.unk_id`, no byte fallback;
//! - normaliser: `Precompiled(precompiled_charsmap)` (when the model has one), strip on the
//!   right, runs of two or more spaces replaced by `▁`;
//! - pre-tokenizer and decoder: Metaspace `▁` with splitting, prepended to every word (`legacy`,
//!   the default), to the first one only (`legacy: false`), or never (`add_prefix_space: false`);
//! - post-processor: `$A </s>`, pairs `$A </s> $B </s>`;
//! - added tokens: the model's CONTROL pieces (special) and USER_DEFINED ones (not special),
//!   then `tokenizer_config.json`'s `added_tokens_decoder`, then the special tokens
//!   (`</s>`, `<unk>`, `<pad>`, the sentinels) not yet added.

use super::hf_config::T5TokenizerSettings;
use super::sp_proto::{model_type, piece_type, ModelProto};
use super::{check_specials, charsmap, t5_post_processor};
use crate::error::{Error, Result};
use prost::Message;
use std::collections::HashSet;
use std::path::Path;
use tokenizers::models::unigram::Unigram;
use tokenizers::normalizers::replace::{Replace, ReplacePattern};
use tokenizers::normalizers::{strip::Strip, NormalizerWrapper, Sequence};
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::{AddedToken, DecoderWrapper, PostProcessorWrapper, PreTokenizerWrapper, Tokenizer};

/// SentencePiece's word-boundary marker.
const SPACE: char = '▁';

/// Build the T5 tokenizer of `model` (a `spiece.model`) with the settings of `config` (a
/// `tokenizer_config.json`; a missing file means `T5Tokenizer`'s defaults), and check it has
/// T5's `<pad>`=0, `</s>`=1, `<unk>`=2. Errors name the file and what was expected.
pub fn load_spiece(model: &Path, config: &Path) -> Result<Tokenizer> {
    let bad = |msg: String| Error::Tokenizer {
        path: model.to_path_buf(),
        msg,
    };
    let bytes = std::fs::read(model).map_err(|e| Error::io("read", model, e))?;
    let proto = ModelProto::decode(bytes.as_slice()).map_err(|e| {
        bad(format!(
            "not a SentencePiece model (expected a ModelProto protobuf): {e}"
        ))
    })?;
    let settings = T5TokenizerSettings::read(config)?;
    let mut tok = build(&proto, &settings).map_err(bad)?;
    add_tokens(&mut tok, &proto, &settings).map_err(|msg| Error::Tokenizer {
        path: config.to_path_buf(),
        msg,
    })?;
    check_specials(&tok).map_err(bad)?;
    Ok(tok)
}

/// The tokenizer without its added tokens.
fn build(proto: &ModelProto, settings: &T5TokenizerSettings) -> std::result::Result<Tokenizer, String> {
    let kind = proto.model_type();
    if kind != model_type::UNIGRAM {
        return Err(format!(
            "trainer_spec.model_type is {}; cbqa reads only UNIGRAM SentencePiece models \
             (T5's)",
            model_type::name(kind)
        ));
    }
    let unk = unk_id(proto)?;
    let vocab = vocabulary(proto, settings.extra_ids)?;
    let unigram = Unigram::from(vocab, Some(unk), false)
        .map_err(|e| format!("cannot build the Unigram model: {e}"))?;
    let mut tok = Tokenizer::new(unigram);
    let metaspace = Metaspace::new(SPACE, prepend_scheme(settings), true);
    tok.with_normalizer(Some(normalizer(proto.charsmap())?))
        .with_pre_tokenizer(Some(PreTokenizerWrapper::Metaspace(metaspace.clone())))
        .with_decoder(Some(DecoderWrapper::Metaspace(metaspace)))
        .with_post_processor(Some(PostProcessorWrapper::Template(
            t5_post_processor().map_err(|e| e.to_string())?,
        )));
    Ok(tok)
}

/// The pieces with their scores, then the sentinels from `<extra_id_{n-1}>` to `<extra_id_0>`.
/// Pieces must be non-empty, distinct, with finite scores (SentencePiece's own checks).
fn vocabulary(proto: &ModelProto, extra_ids: u32) -> std::result::Result<Vec<(String, f64)>, String> {
    if proto.pieces.is_empty() {
        return Err("has no pieces (expected a SentencePiece vocabulary)".into());
    }
    let mut seen = HashSet::with_capacity(proto.pieces.len());
    let mut vocab = Vec::with_capacity(proto.pieces.len() + extra_ids as usize);
    for (id, p) in proto.pieces.iter().enumerate() {
        let piece = p.piece.as_deref().unwrap_or_default();
        let score = p.score.unwrap_or(0.0);
        if piece.is_empty() {
            return Err(format!("piece {id} is empty"));
        }
        if !score.is_finite() {
            return Err(format!("piece {id} ({piece:?}) has score {score}"));
        }
        if !seen.insert(piece) {
            return Err(format!("piece {id} ({piece:?}) appears twice"));
        }
        vocab.push((piece.to_string(), f64::from(score)));
    }
    vocab.extend((0..extra_ids).rev().map(|i| (format!("<extra_id_{i}>"), 0.0)));
    Ok(vocab)
}

/// `trainer_spec.unk_id`, which must name the model's one UNKNOWN piece.
fn unk_id(proto: &ModelProto) -> std::result::Result<usize, String> {
    let unk = proto.unk_id();
    let n = proto.pieces.len();
    match usize::try_from(unk).ok().and_then(|i| proto.pieces.get(i)) {
        Some(p) if p.kind() == piece_type::UNKNOWN => Ok(unk as usize),
        Some(p) => Err(format!(
            "trainer_spec.unk_id is {unk}, but piece {unk} ({:?}) is not of type UNKNOWN",
            p.piece.as_deref().unwrap_or_default()
        )),
        None => Err(format!(
            "trainer_spec.unk_id is {unk}; expected the id of a piece (0..{n})"
        )),
    }
}

fn normalizer(charsmap: &[u8]) -> std::result::Result<NormalizerWrapper, String> {
    let mut steps = Vec::new();
    if !charsmap.is_empty() {
        steps.push(NormalizerWrapper::Precompiled(charsmap::precompiled(charsmap)?));
    }
    steps.push(NormalizerWrapper::StripNormalizer(Strip::new(false, true)));
    let spaces = Replace::new(ReplacePattern::Regex(" {2,}".into()), SPACE.to_string())
        .map_err(|e| format!("cannot build the whitespace normaliser: {e}"))?;
    steps.push(NormalizerWrapper::Replace(spaces));
    Ok(NormalizerWrapper::Sequence(Sequence::new(steps)))
}

/// transformers' `_get_prepend_scheme`.
fn prepend_scheme(settings: &T5TokenizerSettings) -> PrependScheme {
    match (settings.add_prefix_space, settings.legacy) {
        (false, _) => PrependScheme::Never,
        (true, true) => PrependScheme::Always,
        (true, false) => PrependScheme::First,
    }
}

/// Add the model's CONTROL/USER_DEFINED pieces, then the config's tokens, then the special
/// tokens, in the order transformers adds them; a config token must land on its declared id.
fn add_tokens(
    tok: &mut Tokenizer,
    proto: &ModelProto,
    settings: &T5TokenizerSettings,
) -> std::result::Result<(), String> {
    let from_model: Vec<AddedToken> = proto
        .pieces
        .iter()
        .filter(|p| matches!(p.kind(), piece_type::CONTROL | piece_type::USER_DEFINED))
        .map(|p| {
            let special = p.kind() == piece_type::CONTROL;
            AddedToken::from(p.piece.clone().unwrap_or_default(), special).normalized(false)
        })
        .collect();
    tok.add_tokens(&from_model);
    for (id, token) in &settings.added_tokens {
        tok.add_tokens(std::slice::from_ref(token));
        let got = tok.token_to_id(&token.content);
        if got != Some(*id) {
            return Err(format!(
                "added_tokens_decoder puts {:?} at id {id}, but with spiece.model and \
                 extra_ids = {} it gets id {}",
                token.content,
                settings.extra_ids,
                got.map_or("none".into(), |g| g.to_string())
            ));
        }
    }
    let present: HashSet<String> = tok.get_added_tokens_decoder().into_values().map(|t| t.content).collect();
    let specials: Vec<AddedToken> = special_tokens(settings)?
        .into_iter()
        .filter(|t| !present.contains(&t.content))
        .collect();
    tok.add_tokens(&specials);
    Ok(())
}

/// `</s>`, `<unk>`, `<pad>` and the additional special tokens, with `T5Tokenizer`'s rule for
/// the sentinels: the `<extra_id_N>` listed must number `extra_ids`, and none listed means all
/// `extra_ids` of them are appended.
fn special_tokens(settings: &T5TokenizerSettings) -> std::result::Result<Vec<AddedToken>, String> {
    let mut tokens: Vec<AddedToken> = ["</s>", "<unk>", "<pad>"]
        .iter()
        .map(|t| AddedToken::from(t.to_string(), true))
        .collect();
    tokens.extend(settings.additional_special.iter().cloned());
    let listed = settings
        .additional_special
        .iter()
        .filter(|t| t.content.contains("<extra_id_"))
        .count();
    if listed == 0 {
        tokens.extend((0..settings.extra_ids).map(|i| AddedToken::from(format!("<extra_id_{i}>"), true)));
    } else if settings.extra_ids > 0 && listed != settings.extra_ids as usize {
        return Err(format!(
            "additional_special_tokens lists {listed} <extra_id_N> tokens but extra_ids is {}; \
             expected as many",
            settings.extra_ids
        ));
    }
    Ok(tokens)
}
