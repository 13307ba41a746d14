//! The OpenAPI schemas of corral's ids (node ids, room and queue names,
//! agent ids, channel ids, tokens, room kinds, the room map's cursor), each
//! with its pattern and length limits.
//!
//! Every limit is read from the id type itself ([`NodeId::MAX_LEN`],
//! [`NodeId::CHARSET`], ...), the constants its validator checks, so the
//! document cannot drift from what the server accepts. Handlers keep
//! taking ids as plain strings and validate them themselves, so a bad id
//! gets its own error code (`bad_name`, `unknown_node`, ...), not
//! `malformed_json`; fields and parameters point at these schemas with
//! `#[schema(value_type = NodeId)]` or `("id" = NodeId, Path, ...)`.

use std::borrow::Cow;

use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::{PartialSchema, ToSchema};

use crate::domain::{AgentId, ChannelId, NodeId, RoomKind, RoomName, TokenId};

/// A string schema of 1 to `max` characters matching `pattern`.
fn id_schema(what: &str, pattern: String, max: usize, allowed: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(format!("A {what}: 1 to {max} characters, {allowed}.")))
        .min_length(Some(1))
        .max_length(Some(max))
        .pattern(Some(pattern))
        .into()
}

macro_rules! id_schema {
    ($name:ident) => {
        impl PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                id_schema(
                    $name::WHAT,
                    $name::pattern(),
                    $name::MAX_LEN,
                    &$name::CHARSET.to_string(),
                )
            }
        }

        impl ToSchema for $name {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed(stringify!($name))
            }
        }
    };
}

id_schema!(NodeId);
id_schema!(RoomName);
id_schema!(AgentId);
id_schema!(ChannelId);
id_schema!(TokenId);

impl PartialSchema for RoomKind {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some("What a room is for."))
            .enum_values(Some(
                [RoomKind::Conference, RoomKind::Queue].map(RoomKind::as_str),
            ))
            .into()
    }
}

impl ToSchema for RoomKind {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("RoomKind")
    }
}

/// The room map's page cursor, `<node>/<kind>:<name>` (the last room of the
/// previous page, as `next` gave it); any other value is `bad_query`.
#[derive(Debug)]
pub struct Cursor;

impl Cursor {
    /// The pattern of a cursor, from the patterns of its parts (see
    /// `store::parse_cursor`).
    pub fn pattern() -> String {
        format!(
            "^{node}{{1,{node_max}}}/({kinds}):{name}{{1,{name_max}}}$",
            node = NodeId::CHARSET.class(),
            node_max = NodeId::MAX_LEN,
            kinds = [RoomKind::Conference, RoomKind::Queue]
                .map(RoomKind::as_str)
                .join("|"),
            name = RoomName::CHARSET.class(),
            name_max = RoomName::MAX_LEN,
        )
    }
}

impl PartialSchema for Cursor {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "The `next` of the previous page: `<node>/<kind>:<name>`, the last room it held.",
            ))
            .pattern(Some(Cursor::pattern()))
            .into()
    }
}

impl ToSchema for Cursor {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Cursor")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Strings around every edge of the id rules: each ASCII character and
    /// a few non-ASCII ones alone, in the middle of a valid id, and the
    /// lengths 0, 1, max and max + 1.
    fn corpus(max: usize) -> Vec<String> {
        let mut out = vec![String::new(), "a".repeat(max), "a".repeat(max + 1)];
        let odd = ['é', 'ß', '\u{2028}', '０', 'İ'];
        for c in (0u8..128).map(char::from).chain(odd) {
            out.push(c.to_string());
            out.push(format!("ab{c}cd"));
        }
        out
    }

    fn agree(pattern: &str, max: usize, valid: impl Fn(&str) -> bool) {
        let re = regex::Regex::new(pattern).expect("the pattern compiles");
        for s in corpus(max) {
            assert_eq!(
                re.is_match(&s),
                valid(&s),
                "{pattern} and the validator disagree on {s:?}"
            );
        }
    }

    /// The documented pattern accepts exactly what the validator accepts.
    #[test]
    fn patterns_match_exactly_what_the_validators_accept() {
        agree(&NodeId::pattern(), NodeId::MAX_LEN, |s| {
            NodeId::new(s).is_ok()
        });
        agree(&RoomName::pattern(), RoomName::MAX_LEN, |s| {
            RoomName::new(s).is_ok()
        });
        agree(&AgentId::pattern(), AgentId::MAX_LEN, |s| {
            AgentId::new(s).is_ok()
        });
        agree(&ChannelId::pattern(), ChannelId::MAX_LEN, |s| {
            ChannelId::new(s).is_ok()
        });
        agree(&TokenId::pattern(), TokenId::MAX_LEN, |s| {
            TokenId::new(s).is_ok()
        });
        assert_eq!(NodeId::pattern(), "^[A-Za-z0-9_\\-]{1,64}$");
    }

    /// A cursor the store renders matches the documented pattern, and a
    /// string the pattern refuses is refused by the store.
    #[test]
    fn the_cursor_pattern_is_the_stores_rule() {
        let re = regex::Regex::new(&Cursor::pattern()).expect("compiles");
        for (cursor, ok) in [
            ("ast1/conference:sales", true),
            ("a-b_c/queue:q_1-x", true),
            ("ast1/party:sales", false),
            ("ast1:conference/sales", false),
            ("/conference:sales", false),
            ("ast1/conference:", false),
            ("ast1/conference:a:b", false),
            ("ast 1/conference:sales", false),
        ] {
            assert_eq!(re.is_match(cursor), ok, "{cursor}");
            assert_eq!(
                crate::store::parse_cursor(cursor).is_ok(),
                ok,
                "the store on {cursor}"
            );
        }
    }

    /// The document points every id at its schema, with the validators'
    /// limits.
    #[test]
    fn the_document_carries_the_id_rules() {
        let doc = serde_json::to_value(super::super::openapi()).expect("serialisable");
        let schemas = &doc["components"]["schemas"];
        for (name, pattern, max) in [
            ("NodeId", NodeId::pattern(), NodeId::MAX_LEN),
            ("RoomName", RoomName::pattern(), RoomName::MAX_LEN),
            ("AgentId", AgentId::pattern(), AgentId::MAX_LEN),
            ("ChannelId", ChannelId::pattern(), ChannelId::MAX_LEN),
            ("TokenId", TokenId::pattern(), TokenId::MAX_LEN),
        ] {
            assert_eq!(schemas[name]["pattern"], pattern.as_str(), "{name}");
            assert_eq!(schemas[name]["maxLength"], max, "{name}");
            assert_eq!(schemas[name]["minLength"], 1, "{name}");
        }
        assert_eq!(
            schemas["RoomKind"]["enum"],
            serde_json::json!(["conference", "queue"])
        );
        let param = |path: &str, method: &str, name: &str| {
            doc["paths"][path][method]["parameters"]
                .as_array()
                .and_then(|ps| ps.iter().find(|p| p["name"] == name))
                .map(|p| p["schema"]["$ref"].clone())
                .unwrap_or_default()
        };
        for (path, method, name, schema) in [
            ("/v1/nodes/{id}/drain", "post", "id", "NodeId"),
            ("/v1/rooms/{kind}/{name}", "get", "kind", "RoomKind"),
            ("/v1/rooms/{kind}/{name}", "get", "name", "RoomName"),
            ("/v1/tokens/{token}", "get", "token", "TokenId"),
            (
                "/v1/queues/{name}/members/{agent}",
                "delete",
                "agent",
                "AgentId",
            ),
        ] {
            assert_eq!(
                param(path, method, name),
                format!("#/components/schemas/{schema}"),
                "{method} {path} {name}"
            );
        }
        let colocate = &schemas["ColocateRequest"]["properties"];
        assert_eq!(
            colocate["channel"]["$ref"],
            "#/components/schemas/ChannelId"
        );
    }
}
