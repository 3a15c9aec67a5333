//! AEAP messages as `res_aeap` frames them (`res/res_aeap/message_json.c`): a JSON object with
//! `"request": NAME` or `"response": NAME`, a string `"id"`, an optional `"error_msg"`, and the
//! rest of the body beside them. Parsed here into typed requests at the edge; replies built
//! here. Pure functions; the connection thread calls them.

use serde_json::{json, Map, Value};

use super::codec::Codec;

/// A request from Asterisk, checked.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Request {
    /// `setup`: the codecs Asterisk offers (its own choice first) and the `@param` values.
    Setup { codecs: Vec<String>, params: Vec<(String, String)> },
    /// `set` with `params: {name: value}` (res_speech_aeap sends one name per request).
    Set { params: Vec<(String, String)> },
    /// `get` with `params: [name, ...]`.
    Get { names: Vec<String> },
}

/// A message from Asterisk.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Incoming {
    Request {
        id: String,
        request: Request,
    },
    /// Asterisk's answer to the engine's own `set` (the results push); `error` when it refused.
    Response {
        id: String,
        error: Option<String>,
    },
}

/// Why a text message could not be taken. `id` and `name` are what the error reply echoes
/// (as much of them as could be read).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Malformed {
    pub id: Option<String>,
    pub name: Option<String>,
    pub why: String,
}

/// Parses one text message.
pub(crate) fn parse(text: &str) -> Result<Incoming, Malformed> {
    let bad = |id: Option<String>, name: Option<String>, why: String| Malformed { id, name, why };
    let v: Value = serde_json::from_str(text).map_err(|e| bad(None, None, format!("not JSON: {e}")))?;
    let o = v.as_object().ok_or_else(|| bad(None, None, "a message must be a JSON object".into()))?;
    let id = o.get("id").and_then(Value::as_str).map(str::to_string);
    if let Some(name) = o.get("response").and_then(Value::as_str) {
        let id = id.ok_or_else(|| bad(None, Some(name.into()), "a response needs a string id".into()))?;
        let error = o.get("error_msg").and_then(Value::as_str).map(str::to_string);
        return Ok(Incoming::Response { id, error });
    }
    let name = o.get("request").and_then(Value::as_str).ok_or_else(|| bad(id.clone(), None, "neither a request nor a response".into()))?;
    let named = |why: String| bad(id.clone(), Some(name.to_string()), why);
    let id = id.clone().ok_or_else(|| named("a request needs a string id".into()))?;
    let request = match name {
        "setup" => Request::Setup { codecs: codec_names(o.get("codecs")).map_err(named)?, params: params(o.get("params"), true).map_err(named)? },
        "set" => Request::Set { params: params(o.get("params"), false).map_err(named)? },
        "get" => Request::Get { names: names(o.get("params")).map_err(named)? },
        other => return Err(named(format!("unsupported request {other:?} (setup, set, get)"))),
    };
    Ok(Incoming::Request { id, request })
}

fn codec_names(v: Option<&Value>) -> Result<Vec<String>, String> {
    let list = v.and_then(Value::as_array).ok_or("setup needs codecs: [{\"name\": ..}, ..]")?;
    let names: Vec<String> = list.iter().filter_map(|c| c.get("name").and_then(Value::as_str)).map(str::to_string).collect();
    if names.is_empty() {
        return Err("setup offers no codec name".into());
    }
    Ok(names)
}

/// `params` as name/value pairs; values must be strings, numbers or booleans (what Asterisk's
/// `@param` and `SPEECH_ENGINE` give are strings). `optional`: absent means none.
fn params(v: Option<&Value>, optional: bool) -> Result<Vec<(String, String)>, String> {
    let o = match v {
        None | Some(Value::Null) if optional => return Ok(Vec::new()),
        Some(Value::Object(o)) if !o.is_empty() || optional => o,
        _ => return Err("params must be an object of name: value".into()),
    };
    o.iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k.clone(), s.clone())),
            Value::Number(n) => Ok((k.clone(), n.to_string())),
            Value::Bool(b) => Ok((k.clone(), b.to_string())),
            _ => Err(format!("parameter {k:?}: a string value is expected")),
        })
        .collect()
}

fn names(v: Option<&Value>) -> Result<Vec<String>, String> {
    let list = v.and_then(Value::as_array).ok_or("get needs params: [name, ..]")?;
    let names: Option<Vec<String>> = list.iter().map(|n| n.as_str().map(str::to_string)).collect();
    names.filter(|n| !n.is_empty()).ok_or_else(|| "get needs params: [name, ..] of strings".into())
}

/// A success response to `name`/`id`, with `body`'s fields beside them.
pub(crate) fn response(name: &str, id: &str, body: Map<String, Value>) -> String {
    let mut o = Map::new();
    o.insert("response".into(), name.into());
    o.insert("id".into(), id.into());
    o.extend(body);
    Value::Object(o).to_string()
}

/// An error response (`error_msg`), echoing what could be read of the request.
pub(crate) fn error(m: &Malformed) -> String {
    let mut o = Map::new();
    o.insert("response".into(), m.name.clone().unwrap_or_default().into());
    if let Some(id) = &m.id {
        o.insert("id".into(), id.clone().into());
    }
    o.insert("error_msg".into(), m.why.clone().into());
    Value::Object(o).to_string()
}

/// The setup response: the chosen codec echoed first (res_speech_aeap fails the setup unless
/// `codecs[0].name` equals the codec it asked for).
pub(crate) fn setup_response(id: &str, codec: Codec) -> String {
    let mut body = Map::new();
    body.insert("codecs".into(), json!([{ "name": codec.name() }]));
    response("setup", id, body)
}

/// One recognition result as res_speech_aeap reads it (`handle_results`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SpeechResult {
    pub text: String,
    /// 0-1000, a JSON integer (`ast_json_object_integer_get`).
    pub score: i64,
    pub grammar: String,
    /// The n-best index (`nbest_num`): 0 for the best.
    pub best: i64,
}

/// The engine's own request that ends a recognition: `set` with `params.results` as the first
/// (only) key, which `handle_request_set` requires.
pub(crate) fn results_request(id: &str, results: &[SpeechResult]) -> String {
    json!({ "request": "set", "id": id, "params": { "results": results } }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_as_res_speech_aeap_sends_them() {
        let setup = r#"{"request":"setup","id":"a1","version":"0.1.0","codecs":[{"name":"ulaw"}],"params":{"language":"en-US"}}"#;
        assert_eq!(
            parse(setup).unwrap(),
            Incoming::Request { id: "a1".into(), request: Request::Setup { codecs: vec!["ulaw".into()], params: vec![("language".into(), "en-US".into())] } }
        );
        let no_params = r#"{"request":"setup","id":"a1","version":"0.1.0","codecs":[{"name":"slin16"}]}"#;
        assert!(matches!(parse(no_params).unwrap(), Incoming::Request { request: Request::Setup { params, .. }, .. } if params.is_empty()));
        assert_eq!(
            parse(r#"{"request":"set","id":"b","params":{"dtmf":"5"}}"#).unwrap(),
            Incoming::Request { id: "b".into(), request: Request::Set { params: vec![("dtmf".into(), "5".into())] } }
        );
        assert_eq!(
            parse(r#"{"request":"get","id":"c","params":["results"]}"#).unwrap(),
            Incoming::Request { id: "c".into(), request: Request::Get { names: vec!["results".into()] } }
        );
        assert_eq!(parse(r#"{"response":"set","id":"d"}"#).unwrap(), Incoming::Response { id: "d".into(), error: None });
    }

    #[test]
    fn malformed_messages_say_why_and_echo_the_id() {
        let e = parse("{not json").unwrap_err();
        assert!(e.why.contains("not JSON") && e.id.is_none());
        let e = parse(r#"{"request":"set","id":"x","params":{}}"#).unwrap_err();
        assert_eq!((e.id.as_deref(), e.name.as_deref()), (Some("x"), Some("set")));
        let reply: Value = serde_json::from_str(&error(&e)).unwrap();
        assert_eq!(reply["id"], "x");
        assert_eq!(reply["response"], "set");
        assert!(reply["error_msg"].as_str().unwrap().contains("params"));
        assert!(parse(r#"{"request":"setup","id":"x","codecs":[]}"#).is_err());
        assert!(parse(r#"{"request":"get","id":"x","params":"results"}"#).is_err());
        assert!(parse(r#"{"request":"frob","id":"x"}"#).unwrap_err().why.contains("unsupported"));
        assert!(parse(r#"{"request":"set","params":{"a":"b"}}"#).unwrap_err().why.contains("id"));
        assert!(parse(r#"{"request":"set","id":"x","params":{"a":[1]}}"#).is_err());
    }

    #[test]
    fn results_are_pushed_with_results_first_and_integer_scores() {
        let r = results_request("e1", &[SpeechResult { text: "yes".into(), score: 870, grammar: "free".into(), best: 0 }]);
        let v: Value = serde_json::from_str(&r).unwrap();
        assert_eq!(v["request"], "set");
        assert_eq!(v["params"].as_object().unwrap().keys().next().unwrap(), "results");
        assert!(v["params"]["results"][0]["score"].is_i64());
        let s: Value = serde_json::from_str(&setup_response("i", Codec::Ulaw)).unwrap();
        assert_eq!(s, json!({"response": "setup", "id": "i", "codecs": [{"name": "ulaw"}]}));
    }
}
