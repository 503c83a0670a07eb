//! The settings of transformers' slow `T5Tokenizer` that decide how its fast conversion
//! tokenizes, read from `tokenizer_config.json` (absent file or keys: `T5Tokenizer`'s defaults).

use crate::error::{Error, Result};
use serde_json::{Map, Value};
use std::path::Path;
use tokenizers::AddedToken;

/// More sentinels than any T5 variant has (T5 and mT5 have 100, ByT5 125); a bound so that a
/// damaged config cannot make us build a vocabulary of billions of entries.
pub(crate) const MAX_EXTRA_IDS: u64 = 10_000;

/// What `T5Tokenizer.__init__` takes from `tokenizer_config.json`, as its converter uses it.
#[derive(Debug, Clone)]
pub(crate) struct T5TokenizerSettings {
    /// `legacy` (default true): false makes the Metaspace prefix apply to the first word only.
    pub legacy: bool,
    /// `add_prefix_space` (default true): false means no `▁` is prepended at all.
    pub add_prefix_space: bool,
    /// `extra_ids` (default 100): the `<extra_id_N>` sentinels at the top of the vocabulary.
    pub extra_ids: u32,
    /// `added_tokens_decoder`, by id in increasing order (written by transformers ≥ 4.34).
    pub added_tokens: Vec<(u32, AddedToken)>,
    /// `additional_special_tokens` (older configs list the sentinels here).
    pub additional_special: Vec<AddedToken>,
}

impl Default for T5TokenizerSettings {
    fn default() -> Self {
        T5TokenizerSettings {
            legacy: true,
            add_prefix_space: true,
            extra_ids: 100,
            added_tokens: Vec::new(),
            additional_special: Vec::new(),
        }
    }
}

impl T5TokenizerSettings {
    /// Read `path`; a missing file gives the defaults.
    pub fn read(path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Ok(T5TokenizerSettings::default());
        }
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("read", path, e))?;
        let json: Value = serde_json::from_str(&text).map_err(|source| Error::Json {
            path: path.to_path_buf(),
            source,
        })?;
        let bad = |msg: String| Error::Tokenizer {
            path: path.to_path_buf(),
            msg,
        };
        let obj = json
            .as_object()
            .ok_or_else(|| bad("expected a JSON object".into()))?;
        Self::from_json(obj).map_err(bad)
    }

    fn from_json(obj: &Map<String, Value>) -> std::result::Result<Self, String> {
        let d = T5TokenizerSettings::default();
        let extra_ids = match obj.get("extra_ids") {
            None | Some(Value::Null) => d.extra_ids,
            Some(v) => v
                .as_u64()
                .filter(|n| *n <= MAX_EXTRA_IDS)
                .map(|n| n as u32)
                .ok_or_else(|| {
                    format!("extra_ids is {v}; expected a whole number up to {MAX_EXTRA_IDS}")
                })?,
        };
        let mut added_tokens = Vec::new();
        if let Some(v) = obj.get("added_tokens_decoder").filter(|v| !v.is_null()) {
            let map = v
                .as_object()
                .ok_or("added_tokens_decoder: expected an object of id → token")?;
            for (id, token) in map {
                let id: u32 = id
                    .parse()
                    .map_err(|_| format!("added_tokens_decoder: key {id:?} is not a token id"))?;
                added_tokens.push((id, added_token(token, "added_tokens_decoder")?));
            }
            added_tokens.sort_by_key(|(id, _)| *id);
        }
        let mut additional_special = Vec::new();
        if let Some(v) = obj
            .get("additional_special_tokens")
            .filter(|v| !v.is_null())
        {
            let list = v
                .as_array()
                .ok_or("additional_special_tokens: expected a list")?;
            for token in list {
                additional_special.push(added_token(token, "additional_special_tokens")?);
            }
        }
        Ok(T5TokenizerSettings {
            legacy: flag(obj, "legacy", d.legacy)?,
            add_prefix_space: flag(obj, "add_prefix_space", d.add_prefix_space)?,
            extra_ids,
            added_tokens,
            additional_special,
        })
    }
}

fn flag(obj: &Map<String, Value>, key: &str, default: bool) -> std::result::Result<bool, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(v) => Err(format!("{key} is {v}; expected true, false or null")),
    }
}

/// A token as transformers writes it: a string (a special token with the default flags) or an
/// object `{"content": ..., "lstrip": ..., "rstrip": ..., "normalized": ..., "single_word": ...,
/// "special": ...}`.
fn added_token(v: &Value, key: &str) -> std::result::Result<AddedToken, String> {
    if let Some(s) = v.as_str() {
        return Ok(AddedToken::from(s.to_string(), true));
    }
    let content = v
        .get("content")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{key}: {v} is neither a string nor a token with a \"content\""))?;
    let get = |field: &str, default: bool| match v.get(field) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(x) => Err(format!(
            "{key}: {content:?} has {field} = {x}; expected a boolean"
        )),
    };
    let special = get("special", true)?;
    Ok(AddedToken::from(content.to_string(), special)
        .lstrip(get("lstrip", false)?)
        .rstrip(get("rstrip", false)?)
        .single_word(get("single_word", false)?)
        .normalized(get("normalized", !special)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> std::result::Result<T5TokenizerSettings, String> {
        T5TokenizerSettings::from_json(v.as_object().unwrap())
    }

    #[test]
    fn keys_and_defaults() {
        let s = parse(
            json!({"legacy": false, "extra_ids": 3, "added_tokens_decoder": {
            "7": {"content": "<extra_id_0>", "lstrip": true, "rstrip": true,
                  "normalized": false, "special": true},
            "1": {"content": "</s>", "special": true}}}),
        )
        .unwrap();
        assert!(!s.legacy && s.add_prefix_space);
        assert_eq!(s.extra_ids, 3);
        assert_eq!(s.added_tokens[0].0, 1);
        assert_eq!(s.added_tokens[1].0, 7);
        assert!(s.added_tokens[1].1.lstrip && s.added_tokens[1].1.rstrip);
        let d = parse(json!({"legacy": null})).unwrap();
        assert!(d.legacy && d.extra_ids == 100 && d.added_tokens.is_empty());
    }

    #[test]
    fn bad_values_are_named() {
        let e = parse(json!({"extra_ids": 1e12})).unwrap_err();
        assert!(e.contains("extra_ids"), "{e}");
        let e = parse(json!({"legacy": "yes"})).unwrap_err();
        assert!(e.contains("legacy"), "{e}");
        let e = parse(json!({"added_tokens_decoder": {"x": "<pad>"}})).unwrap_err();
        assert!(e.contains("not a token id"), "{e}");
        let e = parse(json!({"additional_special_tokens": [3]})).unwrap_err();
        assert!(e.contains("neither a string"), "{e}");
    }
}
