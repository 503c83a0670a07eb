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
use super::{charsmap, check_specials, t5_post_processor};
use crate::error::{Error, Result};
use prost::Message;
use std::collections::HashSet;
use std::path::Path;
use tokenizers::models::unigram::Unigram;
use tokenizers::normalizers::replace::{Replace, ReplacePattern};
use tokenizers::normalizers::{strip::Strip, NormalizerWrapper, Sequence};
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::{
    AddedToken, DecoderWrapper, PostProcessorWrapper, PreTokenizerWrapper, Tokenizer,
};

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
    check_specials(&tok).map_err(bad)?;
    add_config_tokens(&mut tok, &settings).map_err(|msg| Error::Tokenizer {
        path: config.to_path_buf(),
        msg,
    })?;
    Ok(tok)
}

/// The tokenizer with the model's own added tokens, not yet those of the config.
fn build(
    proto: &ModelProto,
    settings: &T5TokenizerSettings,
) -> std::result::Result<Tokenizer, String> {
    let kind = proto.model_type();
    if kind != model_type::UNIGRAM {
        return Err(format!(
            "trainer_spec.model_type is {}; cbqa reads only UNIGRAM SentencePiece models \
             (T5's)",
            model_type::name(kind)
        ));
    }
    let vocab = vocabulary(proto, settings.extra_ids)?;
    let unk = unk_id(proto)?;
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
    add_model_tokens(&mut tok, proto);
    Ok(tok)
}

/// The pieces with their scores, then the sentinels from `<extra_id_{n-1}>` to `<extra_id_0>`.
/// Pieces must be non-empty, distinct, with finite scores (SentencePiece's own checks).
fn vocabulary(
    proto: &ModelProto,
    extra_ids: u32,
) -> std::result::Result<Vec<(String, f64)>, String> {
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
    vocab.extend(
        (0..extra_ids)
            .rev()
            .map(|i| (format!("<extra_id_{i}>"), 0.0)),
    );
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
        steps.push(NormalizerWrapper::Precompiled(charsmap::precompiled(
            charsmap,
        )?));
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

/// The model's CONTROL pieces (special) and USER_DEFINED ones, as transformers' converter adds
/// them.
fn add_model_tokens(tok: &mut Tokenizer, proto: &ModelProto) {
    let tokens: Vec<AddedToken> = proto
        .pieces
        .iter()
        .filter(|p| matches!(p.kind(), piece_type::CONTROL | piece_type::USER_DEFINED))
        .map(|p| {
            let special = p.kind() == piece_type::CONTROL;
            AddedToken::from(p.piece.clone().unwrap_or_default(), special).normalized(false)
        })
        .collect();
    tok.add_tokens(&tokens);
}

/// The config's `added_tokens_decoder`, then the special tokens not yet added, in the order
/// `PreTrainedTokenizerFast` adds them; a config token must land on its declared id.
fn add_config_tokens(
    tok: &mut Tokenizer,
    settings: &T5TokenizerSettings,
) -> std::result::Result<(), String> {
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
    let present: HashSet<String> = tok
        .get_added_tokens_decoder()
        .into_values()
        .map(|t| t.content)
        .collect();
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
        tokens.extend(
            (0..settings.extra_ids).map(|i| AddedToken::from(format!("<extra_id_{i}>"), true)),
        );
    } else if settings.extra_ids > 0 && listed != settings.extra_ids as usize {
        return Err(format!(
            "additional_special_tokens lists {listed} <extra_id_N> tokens but extra_ids is {}; \
             expected as many",
            settings.extra_ids
        ));
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::super::sp_proto::{SentencePiece, TrainerSpec};
    use super::*;

    fn proto(pieces: &[(&str, f32, i32)], kind: i32, unk: i32) -> ModelProto {
        ModelProto {
            pieces: pieces
                .iter()
                .map(|(p, s, t)| SentencePiece {
                    piece: Some(p.to_string()),
                    score: Some(*s),
                    r#type: Some(*t),
                })
                .collect(),
            trainer_spec: Some(TrainerSpec {
                model_type: Some(kind),
                unk_id: Some(unk),
            }),
            normalizer_spec: None,
        }
    }

    const T5_HEAD: [(&str, f32, i32); 3] = [
        ("<pad>", 0.0, piece_type::CONTROL),
        ("</s>", 0.0, piece_type::CONTROL),
        ("<unk>", 0.0, piece_type::UNKNOWN),
    ];

    fn tiny() -> ModelProto {
        let mut pieces = T5_HEAD.to_vec();
        pieces.extend([
            ("▁a", -1.0, piece_type::NORMAL),
            ("▁b", -1.0, piece_type::NORMAL),
            ("a", -2.0, piece_type::NORMAL),
            ("b", -2.0, piece_type::NORMAL),
            ("▁", -3.0, piece_type::NORMAL),
            ("<sep>", 0.0, piece_type::USER_DEFINED),
        ]);
        proto(&pieces, model_type::UNIGRAM, 2)
    }

    fn tokenizer(
        p: &ModelProto,
        s: &T5TokenizerSettings,
    ) -> std::result::Result<Tokenizer, String> {
        let mut tok = build(p, s)?;
        check_specials(&tok)?;
        add_config_tokens(&mut tok, s)?;
        Ok(tok)
    }

    fn settings(legacy: bool, extra_ids: u32) -> T5TokenizerSettings {
        T5TokenizerSettings {
            legacy,
            extra_ids,
            ..T5TokenizerSettings::default()
        }
    }

    #[test]
    fn a_tiny_model_builds_a_t5_tokenizer() {
        let tok = tokenizer(&tiny(), &settings(true, 2)).unwrap();
        assert_eq!(tok.get_vocab_size(true), 11);
        assert_eq!(tok.token_to_id("<extra_id_0>"), Some(10));
        assert_eq!(tok.token_to_id("<extra_id_1>"), Some(9));
        let enc = tok.encode("a  b<sep>b ", true).unwrap();
        assert_eq!(enc.get_tokens(), ["▁a", "▁b", "<sep>", "▁b", "</s>"]);
        assert_eq!(tok.decode(&[3, 4], true).unwrap(), "a b");
        // legacy: false prepends ▁ to the first word only, so "b" after <sep> stays bare.
        let first = tokenizer(&tiny(), &settings(false, 2)).unwrap();
        let enc = first.encode("a<sep>b", false).unwrap();
        assert_eq!(enc.get_tokens(), ["▁a", "<sep>", "b"]);
        let always = tok.encode("a<sep>b", false).unwrap();
        assert_eq!(always.get_tokens(), ["▁a", "<sep>", "▁b"]);
    }

    #[test]
    fn models_that_are_not_t5_unigram_are_refused() {
        let s = settings(true, 2);
        let err = |p: &ModelProto| tokenizer(p, &s).unwrap_err();
        let mut bpe = tiny();
        bpe.trainer_spec.as_mut().unwrap().model_type = Some(model_type::BPE);
        assert!(err(&bpe).contains("model_type is BPE"), "{}", err(&bpe));
        let empty = proto(&[], model_type::UNIGRAM, 0);
        assert!(err(&empty).contains("has no pieces"), "{}", err(&empty));
        let mut twice = tiny();
        twice.pieces[4].piece = Some("▁a".into());
        assert!(
            err(&twice).contains("piece 4 (\"▁a\") appears twice"),
            "{}",
            err(&twice)
        );
        let mut nan = tiny();
        nan.pieces[5].score = Some(f32::NAN);
        assert!(
            err(&nan).contains("piece 5 (\"a\") has score NaN"),
            "{}",
            err(&nan)
        );
        let mut blank = tiny();
        blank.pieces[6].piece = None;
        assert!(err(&blank).contains("piece 6 is empty"), "{}", err(&blank));
        let far = proto(&T5_HEAD, model_type::UNIGRAM, 7);
        assert!(err(&far).contains("unk_id is 7"), "{}", err(&far));
        let control = proto(&T5_HEAD, model_type::UNIGRAM, 1);
        assert!(
            err(&control).contains("is not of type UNKNOWN"),
            "{}",
            err(&control)
        );
        let mut swapped = T5_HEAD;
        swapped.swap(0, 1);
        let swapped = proto(&swapped, model_type::UNIGRAM, 2);
        assert!(
            err(&swapped).contains("<pad> has id 1, T5 expects 0"),
            "{}",
            err(&swapped)
        );
    }

    #[test]
    fn sentinel_lists_must_match_extra_ids() {
        let mut s = settings(true, 2);
        s.additional_special = vec![AddedToken::from("<extra_id_0>", true)];
        let e = tokenizer(&tiny(), &s).unwrap_err();
        assert!(
            e.contains("lists 1 <extra_id_N> tokens but extra_ids is 2"),
            "{e}"
        );
        // Without sentinels in the vocabulary (extra_ids 0), listed ones are added on top.
        let mut s = settings(true, 0);
        s.additional_special = vec![AddedToken::from("<extra_id_0>", true)];
        let tok = tokenizer(&tiny(), &s).unwrap();
        assert_eq!(tok.token_to_id("<extra_id_0>"), Some(9));
    }
}
