//! Reading corral's OpenAPI document in tests: the schema of a request
//! body, a parameter or a response, and a validator for the JSON Schema
//! keywords the document uses, so a test can check a request or an answer
//! against what the document promises.
//!
//! The validator knows exactly the keywords below and panics on any other,
//! so a keyword the document starts using cannot be skipped silently.
//! `format` is an annotation (as JSON Schema 2020-12 has it by default):
//! not checked.

use serde_json::Value;

/// Keywords that only describe.
const ANNOTATIONS: &[&str] = &[
    "description",
    "title",
    "default",
    "examples",
    "example",
    "format",
    "deprecated",
];

/// The document, read once.
pub struct Doc {
    root: Value,
}

/// A request parameter of an operation.
pub struct Param<'a> {
    /// `path` or `query`.
    pub location: &'a str,
    /// Its name.
    pub name: &'a str,
    /// Whether it must be given.
    pub required: bool,
    /// Its schema.
    pub schema: &'a Value,
}

impl Doc {
    /// Wraps the document.
    pub fn new(root: Value) -> Self {
        Self { root }
    }

    /// The operation `method` (lower case) on the path template.
    pub fn operation(&self, method: &str, template: &str) -> &Value {
        let op = &self.root["paths"][template][method.to_lowercase()];
        assert!(op.is_object(), "no {method} {template} in the document");
        op
    }

    /// The operation's parameters.
    pub fn params(&self, method: &str, template: &str) -> Vec<Param<'_>> {
        self.operation(method, template)["parameters"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .map(|p| Param {
                        location: p["in"].as_str().expect("parameter in"),
                        name: p["name"].as_str().expect("parameter name"),
                        required: p["required"].as_bool().unwrap_or(false),
                        schema: &p["schema"],
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The JSON request body's schema and whether a body is required, if
    /// the operation takes one.
    pub fn request_body(&self, method: &str, template: &str) -> Option<(&Value, bool)> {
        let body = &self.operation(method, template)["requestBody"];
        if body.is_null() {
            return None;
        }
        let schema = &body["content"]["application/json"]["schema"];
        assert!(
            schema.is_object(),
            "{method} {template}: a body that is not JSON"
        );
        Some((schema, body["required"].as_bool().unwrap_or(false)))
    }

    /// The documented answer for `status`: its content type and schema, or
    /// `None` when it has no body.
    pub fn response(&self, method: &str, template: &str, status: u16) -> Option<(&str, &Value)> {
        let resp = &self.operation(method, template)["responses"][status.to_string()];
        assert!(
            resp.is_object(),
            "{method} {template} does not document {status}"
        );
        let content = resp["content"].as_object()?;
        assert_eq!(
            content.len(),
            1,
            "{method} {template} {status}: one content type"
        );
        content
            .iter()
            .next()
            .map(|(ct, media)| (ct.as_str(), &media["schema"]))
    }

    /// Checks `value` against `schema`; the error says where and why.
    pub fn validate(&self, schema: &Value, value: &Value) -> Result<(), String> {
        self.check(schema, value, "$")
    }

    fn resolve<'a>(&'a self, schema: &'a Value) -> &'a Value {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let name = r
                    .strip_prefix("#/components/schemas/")
                    .unwrap_or_else(|| panic!("unsupported $ref {r}"));
                let target = &self.root["components"]["schemas"][name];
                assert!(target.is_object(), "{r} does not resolve");
                target
            }
            None => schema,
        }
    }

    fn check(&self, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
        let obj = schema
            .as_object()
            .unwrap_or_else(|| panic!("schema at {at} is not an object: {schema}"));
        for (key, rule) in obj {
            match key.as_str() {
                "$ref" => self.check(self.resolve(schema), value, at)?,
                "type" => {
                    let types: Vec<&str> = match rule {
                        Value::String(t) => vec![t.as_str()],
                        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                        other => panic!("type {other} at {at}"),
                    };
                    if !types.iter().any(|t| is_type(t, value)) {
                        return Err(format!("{at}: {value} is not of type {rule}"));
                    }
                }
                "enum" => {
                    let allowed = rule.as_array().expect("enum is an array");
                    if !allowed.contains(value) {
                        return Err(format!("{at}: {value} is not one of {rule}"));
                    }
                }
                "properties" => {
                    if let Some(fields) = value.as_object() {
                        for (name, sub) in rule.as_object().expect("properties") {
                            if let Some(v) = fields.get(name) {
                                self.check(sub, v, &format!("{at}.{name}"))?;
                            }
                        }
                    }
                }
                "required" => {
                    if let Some(fields) = value.as_object() {
                        for name in rule.as_array().expect("required is an array") {
                            let name = name.as_str().expect("a field name");
                            if !fields.contains_key(name) {
                                return Err(format!("{at}: no {name:?}"));
                            }
                        }
                    }
                }
                "additionalProperties" => {
                    if let Some(fields) = value.as_object() {
                        let known = obj.get("properties").and_then(Value::as_object);
                        for (name, v) in fields {
                            if known.is_some_and(|k| k.contains_key(name)) {
                                continue;
                            }
                            match rule {
                                Value::Bool(true) => {}
                                Value::Bool(false) => {
                                    return Err(format!("{at}: unknown field {name:?}"));
                                }
                                sub => self.check(sub, v, &format!("{at}.{name}"))?,
                            }
                        }
                    }
                }
                "items" => {
                    if let Some(items) = value.as_array() {
                        for (i, v) in items.iter().enumerate() {
                            self.check(rule, v, &format!("{at}[{i}]"))?;
                        }
                    }
                }
                "allOf" => {
                    for sub in rule.as_array().expect("allOf is an array") {
                        self.check(sub, value, at)?;
                    }
                }
                "oneOf" | "anyOf" => {
                    let subs = rule.as_array().expect("a list of schemas");
                    let passed = subs
                        .iter()
                        .filter(|s| self.check(s, value, at).is_ok())
                        .count();
                    let ok = if key == "oneOf" {
                        passed == 1
                    } else {
                        passed >= 1
                    };
                    if !ok {
                        return Err(format!(
                            "{at}: {value} matches {passed} of the {key} schemas"
                        ));
                    }
                }
                "pattern" => {
                    if let Some(s) = value.as_str() {
                        let re = regex::Regex::new(rule.as_str().expect("pattern"))
                            .unwrap_or_else(|e| panic!("pattern at {at}: {e}"));
                        if !re.is_match(s) {
                            return Err(format!("{at}: {s:?} does not match {rule}"));
                        }
                    }
                }
                "minLength" | "maxLength" => {
                    if let Some(s) = value.as_str() {
                        let n = s.chars().count() as u64;
                        let limit = rule.as_u64().expect("a length");
                        let ok = if key == "minLength" {
                            n >= limit
                        } else {
                            n <= limit
                        };
                        if !ok {
                            return Err(format!("{at}: {s:?} breaks {key} {limit}"));
                        }
                    }
                }
                "minimum" | "maximum" => {
                    if let (Some(n), Some(limit)) = (value.as_f64(), rule.as_f64()) {
                        let ok = if key == "minimum" {
                            n >= limit
                        } else {
                            n <= limit
                        };
                        if !ok {
                            return Err(format!("{at}: {n} breaks {key} {limit}"));
                        }
                    }
                }
                k if ANNOTATIONS.contains(&k) => {}
                other => {
                    panic!("the test's validator does not know the keyword {other:?} (at {at})")
                }
            }
        }
        Ok(())
    }
}

fn is_type(t: &str, v: &Value) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "string" => v.is_string(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64(),
        other => panic!("unknown type {other}"),
    }
}

/// Decodes `%XX` escapes; `None` when the result is not UTF-8 (such a
/// value cannot match any documented string).
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// A parameter's value, as the document would read it: a number for an
/// integer schema (if it parses as one), else the string.
pub fn param_value(doc: &Doc, schema: &Value, raw: &str) -> Value {
    let schema = doc.resolve(schema);
    if schema["type"] == "integer" {
        if let Ok(n) = raw.parse::<i64>() {
            return Value::from(n);
        }
        if let Ok(n) = raw.parse::<u64>() {
            return Value::from(n);
        }
        if !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit()) {
            // Larger than u64: still an integer; serde_json keeps it as a
            // float, which "integer" refuses, so say so plainly.
            return Value::from(u64::MAX);
        }
    }
    Value::String(raw.to_owned())
}
