//! `/v1/queues`: the operators' view of call queues (every queue's figures,
//! one queue's waiting callers and agents) and static member management
//! (add or update, remove, pause, unpause).
//!
//! A queue is known once it has a state document in the store: its first
//! caller, call-in agent or member created it. The state and its rules are
//! [`crate::queue`]'s; the changes go through the controller's operator
//! functions ([`Controller::queue_add_member`] and friends), which save the
//! document by compare-and-set and then let the queue engine pair whoever
//! can be paired. These handlers only translate.
//!
//! Times in the answers are ages in ms computed from the store's Unix-ms
//! stamps against this replica's clock at the time of the request.
//!
//! [`Controller::queue_add_member`]: crate::controller::Controller::queue_add_member

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::extract::{AppJson, AppPath, Authorized};
use crate::controller::queues::now_ms;
use crate::domain::{AgentId, ChannelId, NodeId, RoomKey, RoomKind, RoomName};
use crate::queue::{Agent, AgentKind, AgentState, QueueSettings, QueueState, Refused};

/// What `template` of `POST /v1/queues/{name}/members` replaces with the
/// agent id.
pub const AGENT_PLACEHOLDER: &str = "{agent}";

/// Agents of a queue by what they do now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AgentCounts {
    /// Free for the next caller (not paused).
    pub available: u32,
    /// Paused and otherwise free (a paused agent on a call counts as busy).
    pub paused: u32,
    /// A static member whose phone rings for a caller.
    pub ringing: u32,
    /// On a call.
    pub busy: u32,
    /// After a call, for the queue's wrap-up time.
    pub wrap_up: u32,
}

/// One queue in `GET /v1/queues`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct QueueRow {
    /// The queue's name.
    #[schema(value_type = RoomName)]
    pub name: String,
    /// The node the queue lives on; `null` when it has no placement (no
    /// call in it now).
    #[schema(value_type = Option<NodeId>)]
    pub node: Option<String>,
    /// How static members are rung: `longest-idle`, `round-robin` or
    /// `ring-all`.
    pub strategy: String,
    /// Callers waiting now.
    pub waiting: u32,
    /// The longest current wait, in ms (0 when nobody waits).
    pub longest_wait_ms: u64,
    /// Agents by state.
    pub agents: AgentCounts,
    /// Callers connected to an agent, ever.
    pub answered: u64,
    /// Callers who hung up while waiting.
    pub abandoned: u64,
    /// Callers sent to the treatment after `max_wait`.
    pub timed_out: u64,
    /// Arrivals sent to the treatment because `max_callers` were waiting.
    pub overflowed: u64,
    /// Calls lost with their node.
    pub lost: u64,
}

/// Every known queue.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct QueueList {
    /// Sorted by name.
    pub queues: Vec<QueueRow>,
}

/// A caller waiting in a queue.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CallerView {
    /// 1-based place in the queue (1 is served next).
    pub position: u32,
    /// The caller's channel.
    #[schema(value_type = ChannelId)]
    pub channel: String,
    /// The node the channel is on.
    #[schema(value_type = NodeId)]
    pub node: String,
    /// Caller id (number), as the caller's channel showed it.
    pub caller: String,
    /// How long it has waited, in ms.
    pub waiting_ms: u64,
    /// Static members ringing for it now.
    #[schema(value_type = Vec<AgentId>)]
    pub offered: Vec<String>,
}

/// An agent of a queue.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AgentView {
    /// The agent id.
    #[schema(value_type = AgentId)]
    pub agent: String,
    /// `call_in` (logged in by calling `agent,<queue>,<agent>`) or `static`
    /// (corral dials its endpoint).
    pub kind: String,
    /// What corral dials (static members; `null` for call-in agents).
    pub endpoint: Option<String>,
    /// The agent's login call (call-in agents; `null` for static members).
    #[schema(value_type = Option<ChannelId>)]
    pub channel: Option<String>,
    /// `available`, `paused` (paused and otherwise free), `ringing`, `busy`
    /// or `wrap_up`.
    pub state: String,
    /// The pause flag: a paused agent gets no new caller (a call in
    /// progress goes on).
    pub paused: bool,
    /// How long it has been free, in ms; 0 unless `state` is `available`.
    pub idle_ms: u64,
    /// Callers it took.
    pub answered: u64,
    /// The caller's channel while `ringing` or `busy`, else `null`.
    #[schema(value_type = Option<ChannelId>)]
    pub caller: Option<String>,
    /// Removed while on a call: it goes when the call ends.
    pub removing: bool,
}

/// One queue: its knobs, waiting callers, agents and figures.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct QueueDetailView {
    /// The queue's name.
    #[schema(value_type = RoomName)]
    pub name: String,
    /// The node the queue lives on (`null`: no placement now).
    #[schema(value_type = Option<NodeId>)]
    pub node: Option<String>,
    /// How static members are rung.
    pub strategy: String,
    /// An agent's wrap-up after a call, in ms.
    pub wrapup_ms: u64,
    /// Callers waiting at most (`null`: no limit).
    pub max_callers: Option<u32>,
    /// Longest wait before the treatment, in ms (`null`: no limit).
    pub max_wait_ms: Option<u64>,
    /// Waiting callers, in order (position 1 first).
    pub callers: Vec<CallerView>,
    /// Agents, by id.
    pub agents: Vec<AgentView>,
    /// The longest current wait, in ms.
    pub longest_wait_ms: u64,
    /// Callers connected to an agent.
    pub answered: u64,
    /// Callers who hung up while waiting.
    pub abandoned: u64,
    /// Callers sent to the treatment after `max_wait`.
    pub timed_out: u64,
    /// Arrivals sent to the treatment because the queue was full.
    pub overflowed: u64,
    /// Calls lost with their node.
    pub lost: u64,
}

/// Body of `POST /v1/queues/{name}/members`: exactly one of `endpoint` and
/// `template` (its schema, which says so, is written out below).
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MemberRequest {
    /// The agent id.
    pub agent: String,
    /// What corral dials for this member: `Tech/resource`, e.g.
    /// `PJSIP/alice`.
    pub endpoint: Option<String>,
    /// An endpoint with `{agent}` standing for the agent id, e.g.
    /// `PJSIP/{agent}@kamailio`.
    pub template: Option<String>,
    /// Pause the member (no callers until unpaused). Absent: a new member
    /// is not paused and an existing one keeps its flag.
    pub paused: Option<bool>,
}

/// The longest `template`: once its one `{agent}` is replaced by the
/// longest agent id, it is still a valid endpoint.
pub const TEMPLATE_MAX_LEN: usize =
    crate::queue::ENDPOINT_MAX_LEN - (AgentId::MAX_LEN - AGENT_PLACEHOLDER.len());

/// Whether `c` may appear in a template outside its `{agent}`: an endpoint
/// character but a brace.
fn template_char(c: char) -> bool {
    crate::queue::endpoint_char(c) && !matches!(c, '{' | '}')
}

/// The pattern of a `template` [`member_endpoint`] accepts: an endpoint
/// (`Tech/resource`) with `{agent}` once, in either part, and no other
/// brace.
pub fn template_pattern() -> String {
    use crate::queue::ascii_class;
    let tech = ascii_class(|c| template_char(c) && c != '/');
    let rest = ascii_class(template_char);
    let agent = AGENT_PLACEHOLDER.replace('{', "\\{").replace('}', "\\}");
    format!("^({tech}*{agent}{tech}*/{rest}+|{tech}+/{rest}*{agent}{rest}*)$")
}

/// The schema of [`MemberRequest`]: its fields, and a `oneOf` that says
/// exactly one of `endpoint` and `template` is a string (the derive cannot
/// say that).
impl utoipa::PartialSchema for MemberRequest {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{
            AllOfBuilder, ObjectBuilder, OneOfBuilder, SchemaType, Type,
        };
        let nullable = |t: Type| SchemaType::from_iter([t, Type::Null]);
        let fields = ObjectBuilder::new()
            .schema_type(Type::Object)
            .property("agent", utoipa::openapi::Ref::from_schema_name("AgentId"))
            .required("agent")
            .property(
                "endpoint",
                ObjectBuilder::new()
                    .schema_type(nullable(Type::String))
                    .description(Some(
                        "What corral dials for this member: `Tech/resource`, e.g. `PJSIP/alice`.",
                    ))
                    .max_length(Some(crate::queue::ENDPOINT_MAX_LEN))
                    .pattern(Some(crate::queue::endpoint_pattern())),
            )
            .property(
                "template",
                ObjectBuilder::new()
                    .schema_type(nullable(Type::String))
                    .description(Some(format!(
                        "An endpoint with `{AGENT_PLACEHOLDER}` (once; no other brace) standing \
                         for the agent id, e.g. `PJSIP/{AGENT_PLACEHOLDER}@kamailio`."
                    )))
                    .max_length(Some(TEMPLATE_MAX_LEN))
                    .pattern(Some(template_pattern())),
            )
            .property(
                "paused",
                ObjectBuilder::new()
                    .schema_type(nullable(Type::Boolean))
                    .description(Some(
                        "Pause the member (no callers until unpaused). Absent: a new member is \
                         not paused and an existing one keeps its flag.",
                    )),
            )
            .additional_properties(Some(utoipa::openapi::schema::AdditionalProperties::<
                utoipa::openapi::schema::Schema,
            >::FreeForm(false)));
        let given = |field: &str| {
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .required(field)
                .property(field, ObjectBuilder::new().schema_type(Type::String))
        };
        AllOfBuilder::new()
            .description(Some(
                "Body of `POST /v1/queues/{name}/members`: `agent` and exactly one of \
                 `endpoint` and `template` (the other absent or `null`); optional `paused`.",
            ))
            .item(fields)
            .item(
                OneOfBuilder::new()
                    .item(given("endpoint"))
                    .item(given("template")),
            )
            .into()
    }
}

impl ToSchema for MemberRequest {
    fn name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed("MemberRequest")
    }

    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        schemas.push((
            AgentId::name().into_owned(),
            <AgentId as utoipa::PartialSchema>::schema(),
        ));
    }
}

fn queue_name(name: &str) -> Result<RoomName, ApiError> {
    RoomName::new(name).map_err(ApiError::BadName)
}

fn agent_id(agent: &str) -> Result<AgentId, ApiError> {
    AgentId::new(agent).map_err(ApiError::BadAgent)
}

/// The member's dial string from a request: exactly one of `endpoint` and
/// `template`, checked with [`crate::queue::check_endpoint`].
fn member_endpoint(req: &MemberRequest, agent: &AgentId) -> Result<String, ApiError> {
    let endpoint = match (&req.endpoint, &req.template) {
        (Some(e), None) => e.clone(),
        (None, Some(t)) => {
            if t.matches(AGENT_PLACEHOLDER).count() != 1
                || t.replacen(AGENT_PLACEHOLDER, "", 1).contains(['{', '}'])
            {
                return Err(ApiError::BadEndpoint(format!(
                    "template must contain {AGENT_PLACEHOLDER} once and no other brace, e.g. \
                     PJSIP/{AGENT_PLACEHOLDER}@kamailio (or give the endpoint itself as `endpoint`)"
                )));
            }
            if t.chars().count() > TEMPLATE_MAX_LEN {
                return Err(ApiError::BadEndpoint(format!(
                    "template must be at most {TEMPLATE_MAX_LEN} characters (room for the \
                     longest agent id)"
                )));
            }
            t.replace(AGENT_PLACEHOLDER, agent.as_str())
        }
        (Some(_), Some(_)) => {
            return Err(ApiError::BadEndpoint(
                "give either `endpoint` or `template`, not both".into(),
            ));
        }
        (None, None) => {
            return Err(ApiError::BadEndpoint(
                "give `endpoint` (e.g. PJSIP/alice) or `template` (e.g. PJSIP/{agent}@kamailio)"
                    .into(),
            ));
        }
    };
    crate::queue::check_endpoint(&endpoint).map_err(|e| {
        // The endpoint is the client's own input: shorten it, never echo
        // a flood.
        ApiError::BadEndpoint(format!(
            "endpoint: {}",
            e.chars().take(300).collect::<String>()
        ))
    })?;
    Ok(endpoint)
}

fn counts(st: &QueueState) -> AgentCounts {
    let c = st.agent_counts();
    let get = |k: &str| c.get(k).copied().unwrap_or(0);
    AgentCounts {
        available: get("available"),
        paused: get("paused"),
        ringing: get("ringing"),
        busy: get("busy"),
        wrap_up: get("wrap_up"),
    }
}

fn row(name: &RoomName, st: &QueueState, node: Option<String>, s: &QueueSettings) -> QueueRow {
    QueueRow {
        name: name.to_string(),
        node,
        strategy: s.strategy.as_str().to_owned(),
        waiting: u32::try_from(st.callers.len()).unwrap_or(u32::MAX),
        longest_wait_ms: st.longest_wait_ms(now_ms()),
        agents: counts(st),
        answered: st.answered,
        abandoned: st.abandoned,
        timed_out: st.timed_out,
        overflowed: st.overflowed,
        lost: st.lost,
    }
}

/// The view of one agent at `now` (Unix ms).
pub fn agent_view(id: &AgentId, a: &Agent, now: u64) -> AgentView {
    let (kind, endpoint, channel) = match &a.kind {
        AgentKind::CallIn { channel, .. } => ("call_in", None, Some(channel.to_string())),
        AgentKind::Static { endpoint } => ("static", Some(endpoint.clone()), None),
    };
    let state = if a.paused && a.activity == AgentState::Available {
        "paused"
    } else {
        a.activity.name()
    };
    let caller = match &a.activity {
        AgentState::Ringing { caller, .. } => Some(caller.to_string()),
        AgentState::Busy { caller, .. } => Some(caller.channel.to_string()),
        AgentState::Available | AgentState::WrapUp { .. } => None,
    };
    AgentView {
        agent: id.to_string(),
        kind: kind.to_owned(),
        endpoint,
        channel,
        state: state.to_owned(),
        paused: a.paused,
        idle_ms: if state == "available" {
            now.saturating_sub(a.idle_since_ms)
        } else {
            0
        },
        answered: a.answered,
        caller,
        removing: a.removing,
    }
}

fn detail(
    name: &RoomName,
    st: &QueueState,
    node: Option<String>,
    s: &QueueSettings,
) -> QueueDetailView {
    let now = now_ms();
    QueueDetailView {
        name: name.to_string(),
        node,
        strategy: s.strategy.as_str().to_owned(),
        wrapup_ms: u64::try_from(s.wrapup.as_millis()).unwrap_or(u64::MAX),
        max_callers: s.max_callers,
        max_wait_ms: s
            .max_wait
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        callers: st
            .callers
            .iter()
            .enumerate()
            .map(|(i, c)| CallerView {
                position: u32::try_from(i + 1).unwrap_or(u32::MAX),
                channel: c.channel.to_string(),
                node: c.node.to_string(),
                caller: c.caller.clone(),
                waiting_ms: now.saturating_sub(c.since_ms),
                offered: c.offered.iter().map(ToString::to_string).collect(),
            })
            .collect(),
        agents: st
            .agents
            .iter()
            .map(|(id, a)| agent_view(id, a, now))
            .collect(),
        longest_wait_ms: st.longest_wait_ms(now),
        answered: st.answered,
        abandoned: st.abandoned,
        timed_out: st.timed_out,
        overflowed: st.overflowed,
        lost: st.lost,
    }
}

/// The queue's state and node, or `queue_not_found`.
async fn known(st: &AppState, queue: &RoomName) -> Result<(QueueState, Option<String>), ApiError> {
    st.controller
        .queue(queue)
        .await?
        .map(|(q, node)| (q, node.map(|n| n.to_string())))
        .ok_or_else(|| ApiError::QueueNotFound(queue.to_string()))
}

/// The agent's view in `state`, or `agent_not_found`.
fn find_agent(
    queue: &RoomName,
    state: &QueueState,
    agent: &AgentId,
) -> Result<AgentView, ApiError> {
    state
        .agents
        .get(agent)
        .map(|a| agent_view(agent, a, now_ms()))
        .ok_or_else(|| ApiError::AgentNotFound {
            queue: queue.to_string(),
            agent: agent.to_string(),
        })
}

/// Every known queue with its figures.
#[utoipa::path(get, path = "/v1/queues", tag = "queues", operation_id = "list_queues",
    responses(
        (status = 200, description = "Every queue that has a state, by name", body = QueueList),
        (status = 500, description = "`queue_corrupt`: a queue's stored document does not parse", body = ErrorBody),
        (status = 503, description = "`store_unavailable`", body = ErrorBody),
    ))]
pub async fn list(State(st): State<AppState>) -> Result<Json<QueueList>, ApiError> {
    let mut queues = Vec::new();
    for (name, state) in st.controller.queues().await? {
        let room = RoomKey::new(RoomKind::Queue, name.clone());
        let node = st.store.get_room(&room).await?.map(|d| d.placement.node);
        let settings = st.controller.queue_settings(&name);
        queues.push(row(&name, &state, node.map(|n| n.to_string()), &settings));
    }
    Ok(Json(QueueList { queues }))
}

/// One queue: knobs, waiting callers in order, agents, figures.
#[utoipa::path(get, path = "/v1/queues/{name}", tag = "queues", operation_id = "get_queue",
    params(("name" = RoomName, Path, description = "Queue name")),
    responses(
        (status = 200, description = "The queue", body = QueueDetailView),
        (status = 400, description = "`bad_name`", body = ErrorBody),
        (status = 404, description = "`queue_not_found` (never used), `bad_path`", body = ErrorBody),
        (status = 500, description = "`queue_corrupt`", body = ErrorBody),
        (status = 503, description = "`store_unavailable`", body = ErrorBody),
    ))]
pub async fn get(
    State(st): State<AppState>,
    AppPath(name): AppPath<String>,
) -> Result<Json<QueueDetailView>, ApiError> {
    let queue = queue_name(&name)?;
    let (state, node) = known(&st, &queue).await?;
    let settings = st.controller.queue_settings(&queue);
    Ok(Json(detail(&queue, &state, node, &settings)))
}

/// Adds a static member (corral dials its endpoint when a caller waits), or
/// updates one: its endpoint, and its pause flag if `paused` is given; its
/// state (a call in progress) is kept. A queue never used is created.
#[utoipa::path(post, path = "/v1/queues/{name}/members", tag = "queues",
    params(("name" = RoomName, Path, description = "Queue name")),
    request_body(content = MemberRequest, content_type = "application/json",
        description = "`agent` and exactly one of `endpoint` and `template`; optional `paused`"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "An existing static member, updated", body = AgentView),
        (status = 201, description = "A new static member", body = AgentView),
        (status = 400, description = "`bad_name`, `bad_agent`, `bad_endpoint` (malformed, or both or neither of endpoint and template), `malformed_json`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`bad_path`", body = ErrorBody),
        (status = 409, description = "`agent_logged_in`: the id is logged in as a call-in agent", body = ErrorBody),
        (status = 413, description = "`body_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 500, description = "`queue_corrupt`", body = ErrorBody),
        (status = 503, description = "`store_unavailable`, `queue_contended` (retry)", body = ErrorBody),
    ))]
pub async fn add_member(
    _: Authorized,
    State(st): State<AppState>,
    AppPath(name): AppPath<String>,
    AppJson(req): AppJson<MemberRequest>,
) -> Result<(StatusCode, Json<AgentView>), ApiError> {
    let queue = queue_name(&name)?;
    let agent = agent_id(&req.agent)?;
    let endpoint = member_endpoint(&req, &agent)?;
    // Whether it exists decides 200 or 201, and what an absent `paused`
    // means (keep the flag). Another replica may add it in between: then
    // this answers 201 for what became an update, which is harmless.
    let existing = st
        .controller
        .queue(&queue)
        .await?
        .and_then(|(q, _)| q.agents.get(&agent).map(|a| a.paused));
    let paused = req.paused.or(existing).unwrap_or(false);
    match st
        .controller
        .queue_add_member(&queue, &agent, &endpoint, paused)
        .await?
    {
        Ok(state) => {
            let view = find_agent(&queue, &state, &agent)?;
            let status = if existing.is_some() {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            Ok((status, Json(view)))
        }
        Err(refused) => Err(ApiError::AgentLoggedIn {
            agent: agent.to_string(),
            // Adding a member is refused only for a call-in agent's id;
            // the other refusals are about arrivals.
            channel: match refused {
                Refused::AlreadyLoggedIn(channel) => channel.to_string(),
                Refused::Full | Refused::IsStatic => "?".into(),
            },
        }),
    }
}

/// Removes an agent: at once when it is free, ringing (the ringing stops)
/// or in wrap-up. A busy agent is removed after its call: until then it is
/// still listed, with `removing: true`, and gets no new caller.
#[utoipa::path(delete, path = "/v1/queues/{name}/members/{agent}", tag = "queues",
    params(("name" = RoomName, Path, description = "Queue name"),
           ("agent" = AgentId, Path, description = "Agent id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Removed (or, if busy, removed when its call ends)"),
        (status = 400, description = "`bad_name`, `bad_agent`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`queue_not_found`, `agent_not_found`", body = ErrorBody),
        (status = 500, description = "`queue_corrupt`", body = ErrorBody),
        (status = 503, description = "`store_unavailable`, `queue_contended` (retry)", body = ErrorBody),
    ))]
pub async fn remove_member(
    _: Authorized,
    State(st): State<AppState>,
    AppPath((name, agent)): AppPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let queue = queue_name(&name)?;
    let agent = agent_id(&agent)?;
    // A queue never used stays unknown: no document is created for it.
    known(&st, &queue).await?;
    if st.controller.queue_remove_member(&queue, &agent).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::AgentNotFound {
            queue: queue.to_string(),
            agent: agent.to_string(),
        })
    }
}

async fn set_paused(
    st: &AppState,
    name: &str,
    agent: &str,
    paused: bool,
) -> Result<Json<AgentView>, ApiError> {
    let queue = queue_name(name)?;
    let agent = agent_id(agent)?;
    known(st, &queue).await?;
    let not_found = || ApiError::AgentNotFound {
        queue: queue.to_string(),
        agent: agent.to_string(),
    };
    if !st.controller.queue_pause(&queue, &agent, paused).await? {
        return Err(not_found());
    }
    // Read back: the answer shows the agent as it is now (an unpaused
    // agent may already be ringing).
    let (state, _) = known(st, &queue).await?;
    find_agent(&queue, &state, &agent).map(Json)
}

/// Pauses an agent: it gets no new caller; a call in progress goes on.
/// Idempotent.
#[utoipa::path(post, path = "/v1/queues/{name}/members/{agent}/pause", tag = "queues",
    params(("name" = RoomName, Path, description = "Queue name"),
           ("agent" = AgentId, Path, description = "Agent id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The agent, paused", body = AgentView),
        (status = 400, description = "`bad_name`, `bad_agent`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`queue_not_found`, `agent_not_found`", body = ErrorBody),
        (status = 500, description = "`queue_corrupt`", body = ErrorBody),
        (status = 503, description = "`store_unavailable`, `queue_contended` (retry)", body = ErrorBody),
    ))]
pub async fn pause(
    _: Authorized,
    State(st): State<AppState>,
    AppPath((name, agent)): AppPath<(String, String)>,
) -> Result<Json<AgentView>, ApiError> {
    set_paused(&st, &name, &agent, true).await
}

/// Unpauses an agent: it takes callers again (a waiting caller may be
/// offered to it at once). Idempotent.
#[utoipa::path(post, path = "/v1/queues/{name}/members/{agent}/unpause", tag = "queues",
    params(("name" = RoomName, Path, description = "Queue name"),
           ("agent" = AgentId, Path, description = "Agent id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The agent, unpaused", body = AgentView),
        (status = 400, description = "`bad_name`, `bad_agent`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`queue_not_found`, `agent_not_found`", body = ErrorBody),
        (status = 500, description = "`queue_corrupt`", body = ErrorBody),
        (status = 503, description = "`store_unavailable`, `queue_contended` (retry)", body = ErrorBody),
    ))]
pub async fn unpause(
    _: Authorized,
    State(st): State<AppState>,
    AppPath((name, agent)): AppPath<(String, String)>,
) -> Result<Json<AgentView>, ApiError> {
    set_paused(&st, &name, &agent, false).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(endpoint: Option<&str>, template: Option<&str>) -> MemberRequest {
        MemberRequest {
            agent: "alice".into(),
            endpoint: endpoint.map(str::to_owned),
            template: template.map(str::to_owned),
            paused: None,
        }
    }

    #[test]
    fn exactly_one_of_endpoint_and_template() {
        let alice = AgentId::new("alice").unwrap();
        assert_eq!(
            member_endpoint(&req(Some("PJSIP/alice"), None), &alice).unwrap(),
            "PJSIP/alice"
        );
        assert_eq!(
            member_endpoint(&req(None, Some("PJSIP/{agent}@kamailio")), &alice).unwrap(),
            "PJSIP/alice@kamailio"
        );
        for bad in [
            req(Some("PJSIP/a"), Some("PJSIP/{agent}")),
            req(None, None),
            req(None, Some("PJSIP/bob")),
            req(Some("alice"), None),
            req(Some("PJSIP/a,PJSIP/b"), None),
            req(None, Some("{agent}")),
        ] {
            assert!(
                matches!(member_endpoint(&bad, &alice), Err(ApiError::BadEndpoint(_))),
                "{bad:?}"
            );
        }
    }

    /// Endpoints and templates around every edge: each ASCII character in
    /// each part, lengths at and past the limits.
    fn corpus() -> Vec<String> {
        let mut out = vec![
            String::new(),
            "PJSIP/alice".into(),
            "/alice".into(),
            "PJSIP/".into(),
            "PJSIP".into(),
            "a/b/c".into(),
            format!("P/{}", "a".repeat(crate::queue::ENDPOINT_MAX_LEN - 2)),
            format!("P/{}", "a".repeat(crate::queue::ENDPOINT_MAX_LEN - 1)),
        ];
        for c in (0u8..128).map(char::from).chain(['é']) {
            out.push(format!("PJ{c}SIP/alice"));
            out.push(format!("PJSIP/al{c}ice"));
        }
        let mut templates: Vec<String> = out
            .iter()
            .flat_map(|e| {
                let (t, r) = e.split_once('/').unwrap_or((e, ""));
                [
                    format!("{t}{AGENT_PLACEHOLDER}/{r}"),
                    format!("{t}/{r}{AGENT_PLACEHOLDER}"),
                    format!("{t}/{r}{AGENT_PLACEHOLDER}{AGENT_PLACEHOLDER}"),
                    format!("{t}/{{{r}{AGENT_PLACEHOLDER}"),
                ]
            })
            .collect();
        templates.push(format!(
            "P/{AGENT_PLACEHOLDER}{}",
            "a".repeat(TEMPLATE_MAX_LEN - 9)
        ));
        templates.push(format!(
            "P/{AGENT_PLACEHOLDER}{}",
            "a".repeat(TEMPLATE_MAX_LEN - 8)
        ));
        out.extend(templates);
        out
    }

    /// The documented patterns and lengths accept exactly what the server
    /// accepts, for endpoints and templates, with the longest agent id.
    #[test]
    fn endpoint_and_template_patterns_are_the_servers_rules() {
        let endpoint = regex::Regex::new(&crate::queue::endpoint_pattern()).unwrap();
        let template = regex::Regex::new(&template_pattern()).unwrap();
        let longest = AgentId::new("a".repeat(AgentId::MAX_LEN)).unwrap();
        for s in corpus() {
            let documented =
                endpoint.is_match(&s) && s.chars().count() <= crate::queue::ENDPOINT_MAX_LEN;
            assert_eq!(
                documented,
                member_endpoint(&req(Some(&s), None), &longest).is_ok(),
                "endpoint {s:?}"
            );
            let documented = template.is_match(&s) && s.chars().count() <= TEMPLATE_MAX_LEN;
            assert_eq!(
                documented,
                member_endpoint(&req(None, Some(&s)), &longest).is_ok(),
                "template {s:?}"
            );
        }
    }

    #[test]
    fn an_agent_shows_its_state_caller_and_idle_time() {
        let mut q = QueueState::default();
        let alice = AgentId::new("alice").unwrap();
        q.add_member(alice.clone(), "PJSIP/alice".into(), false, 1_000);
        let v = agent_view(&alice, &q.agents[&alice], 4_000);
        assert_eq!(
            (v.kind.as_str(), v.state.as_str(), v.idle_ms, v.caller),
            ("static", "available", 3_000, None)
        );
        q.set_paused(&alice, true);
        let v = agent_view(&alice, &q.agents[&alice], 4_000);
        assert_eq!((v.state.as_str(), v.paused, v.idle_ms), ("paused", true, 0));
    }
}
