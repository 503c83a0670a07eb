//! The part of SentencePiece's `ModelProto` (`spiece.model`) that a T5 tokenizer needs, as
//! hand-written `prost` messages.
//!
//! Field numbers, types and defaults are those of `src/sentencepiece_model.proto` in
//! google/sentencepiece (`syntax = "proto2"`), checked against the descriptors of the
//! `sentencepiece_model_pb2` module that the sentencepiece Python package ships. Fields we do not
//! declare (the other trainer settings, `self_test_data`, `denormalizer_spec`) are skipped by the
//! decoder. Scalars are `Option` because proto2 distinguishes "absent" (the default applies) from
//! an explicit value; the accessors below apply the proto's defaults.

/// `ModelProto`: the vocabulary and the settings it was trained and normalised with.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ModelProto {
    #[prost(message, repeated, tag = "1")]
    pub pieces: Vec<SentencePiece>,
    #[prost(message, optional, tag = "2")]
    pub trainer_spec: Option<TrainerSpec>,
    #[prost(message, optional, tag = "3")]
    pub normalizer_spec: Option<NormalizerSpec>,
}

/// `ModelProto.SentencePiece`: one vocabulary entry.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct SentencePiece {
    #[prost(string, optional, tag = "1")]
    pub piece: Option<String>,
    #[prost(float, optional, tag = "2")]
    pub score: Option<f32>,
    /// A [`piece_type`] value; NORMAL when absent.
    #[prost(int32, optional, tag = "3")]
    pub r#type: Option<i32>,
}

/// `ModelProto.SentencePiece.Type` values.
pub mod piece_type {
    pub const NORMAL: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const CONTROL: i32 = 3;
    pub const USER_DEFINED: i32 = 4;
}

/// `TrainerSpec.ModelType` values.
pub mod model_type {
    pub const UNIGRAM: i32 = 1;
    pub const BPE: i32 = 2;
    pub const WORD: i32 = 3;
    pub const CHAR: i32 = 4;

    /// The proto's name of a model type, for messages.
    pub fn name(t: i32) -> String {
        match t {
            UNIGRAM => "UNIGRAM".into(),
            BPE => "BPE".into(),
            WORD => "WORD".into(),
            CHAR => "CHAR".into(),
            _ => format!("unknown type {t}"),
        }
    }
}

/// `TrainerSpec`: only the fields that decide how the model tokenizes (`byte_fallback`, field
/// 35, is ignored as transformers' T5 converter ignores it).
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct TrainerSpec {
    #[prost(int32, optional, tag = "3")]
    pub model_type: Option<i32>,
    #[prost(int32, optional, tag = "40")]
    pub unk_id: Option<i32>,
}

/// `NormalizerSpec`: only the compiled normalisation rules. transformers' converter ignores
/// `add_dummy_prefix`, `remove_extra_whitespaces` and `escape_whitespaces` (fields 3-5): the
/// prefix comes from `tokenizer_config.json`, and the whitespace steps are always added.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct NormalizerSpec {
    #[prost(bytes = "vec", optional, tag = "2")]
    pub precompiled_charsmap: Option<Vec<u8>>,
}

impl SentencePiece {
    /// The piece's type, NORMAL when absent (the proto's default).
    pub fn kind(&self) -> i32 {
        self.r#type.unwrap_or(piece_type::NORMAL)
    }
}

impl ModelProto {
    /// `trainer_spec.model_type`, UNIGRAM when absent.
    pub fn model_type(&self) -> i32 {
        self.trainer_spec
            .as_ref()
            .and_then(|t| t.model_type)
            .unwrap_or(model_type::UNIGRAM)
    }

    /// `trainer_spec.unk_id`, 0 when absent.
    pub fn unk_id(&self) -> i32 {
        self.trainer_spec
            .as_ref()
            .and_then(|t| t.unk_id)
            .unwrap_or(0)
    }

    /// `normalizer_spec.precompiled_charsmap`, empty when absent.
    pub fn charsmap(&self) -> &[u8] {
        self.normalizer_spec
            .as_ref()
            .and_then(|n| n.precompiled_charsmap.as_deref())
            .unwrap_or(&[])
    }
}
