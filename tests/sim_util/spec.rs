//! The official ARI spec (Swagger 1.1, `../shared/ari-spec/api-docs`), read
//! at test time, and a validator of JSON values against its models.

use std::collections::HashMap;
use std::path::PathBuf;

use serde_json::Value;

/// Operations and models of the spec files the simulator serves.
pub struct Spec {
    /// `(path, method)` → operation JSON.
    pub ops: HashMap<(String, String), Value>,
    /// Model name → model JSON (all files merged).
    pub models: HashMap<String, Value>,
    /// Model name → its parent (from `subTypes`).
    pub parents: HashMap<String, String>,
}

pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/ari-spec/api-docs")
}

impl Spec {
    pub fn load() -> Spec {
        let mut ops = HashMap::new();
        let mut models = HashMap::new();
        let mut parents = HashMap::new();
        for file in [
            "asterisk",
            "channels",
            "bridges",
            "applications",
            "events",
            "deviceStates",
            "endpoints",
            "playbacks",
            "recordings",
        ] {
            let path = dir().join(format!("{file}.json"));
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("cannot read the ARI spec at {}: {e}", path.display()));
            let doc: Value = serde_json::from_str(&text).expect("spec is JSON");
            for api in doc["apis"].as_array().expect("apis") {
                let path = api["path"].as_str().expect("path").to_string();
                for op in api["operations"].as_array().expect("operations") {
                    let m = op["httpMethod"].as_str().expect("method").to_string();
                    ops.insert((path.clone(), m), op.clone());
                }
            }
            for (name, model) in doc["models"].as_object().expect("models") {
                if let Some(subs) = model["subTypes"].as_array() {
                    for s in subs {
                        parents.insert(s.as_str().expect("subtype").to_string(), name.clone());
                    }
                }
                models.insert(name.clone(), model.clone());
            }
        }
        Spec {
            ops,
            models,
            parents,
        }
    }

    /// Properties of a model and its ancestors.
    fn properties(&self, model: &str) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        let mut cur = Some(model.to_string());
        while let Some(m) = cur {
            if let Some(props) = self
                .models
                .get(&m)
                .and_then(|d| d["properties"].as_object())
            {
                for (k, v) in props {
                    out.push((k.clone(), v.clone()));
                }
            }
            cur = self.parents.get(&m).cloned();
        }
        out
    }

    /// Checks `v` against the spec type `ty`; returns the problems found,
    /// each with a JSON path.
    pub fn check(&self, ty: &str, v: &Value, at: &str) -> Vec<String> {
        let mut errs = Vec::new();
        let bad = |what: &str| vec![format!("{at}: expected {what}, got {v}")];
        match ty {
            "string" => {
                if !v.is_string() {
                    return bad("string");
                }
            }
            "int" | "long" => {
                if !(v.is_i64() || v.is_u64()) {
                    return bad("integer");
                }
            }
            "double" => {
                if !v.is_number() {
                    return bad("number");
                }
            }
            "boolean" => {
                if !v.is_boolean() {
                    return bad("boolean");
                }
            }
            "object" => {
                if !v.is_object() {
                    return bad("object");
                }
            }
            "Date" => match v.as_str() {
                Some(s) if is_asterisk_date(s) => {}
                _ => return bad("Date (YYYY-MM-DDTHH:MM:SS.mmm+hhmm)"),
            },
            t if t.starts_with("List[") && t.ends_with(']') => {
                let inner = &t[5..t.len() - 1];
                match v.as_array() {
                    Some(items) => {
                        for (i, item) in items.iter().enumerate() {
                            errs.extend(self.check(inner, item, &format!("{at}[{i}]")));
                        }
                    }
                    None => return bad("array"),
                }
            }
            model => {
                if !self.models.contains_key(model) {
                    return vec![format!("{at}: unknown spec type {model}")];
                }
                let Some(obj) = v.as_object() else {
                    return bad(&format!("{model} object"));
                };
                let props = self.properties(model);
                for (name, p) in &props {
                    let pty = p["type"].as_str().unwrap_or("?");
                    match obj.get(name) {
                        Some(val) => errs.extend(self.check(pty, val, &format!("{at}.{name}"))),
                        None if p["required"] == true => {
                            errs.push(format!("{at}: {model} lacks required {name}"))
                        }
                        None => {}
                    }
                }
                for k in obj.keys() {
                    if !props.iter().any(|(n, _)| n == k) {
                        errs.push(format!("{at}: {model} has no field {k}"));
                    }
                }
            }
        }
        errs
    }

    /// Checks one event (its `type` names the model).
    pub fn check_event(&self, ev: &Value) -> Vec<String> {
        let ty = ev["type"].as_str().unwrap_or("");
        if self.parents.get(ty).map(String::as_str) != Some("Event") {
            return vec![format!("{ty:?} is not an Event subtype in events.json")];
        }
        self.check(ty, ev, ty)
    }
}

/// `2026-01-01T12:00:00.123+0000`.
pub fn is_asterisk_date(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 28 {
        return false;
    }
    let digits = [
        0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18, 20, 21, 22, 24, 25, 26, 27,
    ];
    digits.iter().all(|i| b[*i].is_ascii_digit())
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'.'
        && (b[23] == b'+' || b[23] == b'-')
}
