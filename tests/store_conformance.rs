//! One suite for every store rule, run against both backends: the
//! in-memory store (paused tokio time) and Redis started for real
//! (`support::redis::RedisProcess`; `CORRAL_TEST_REDIS_URL` to use another),
//! each test in its own farm. Then Redis-only chaos: Redis killed (ops fail
//! fast, retryable), Redis restarted with its scripts gone (ops succeed
//! again on the same store), a real one-node Cluster and a real Sentinel.

mod support;

use std::sync::Arc;
use std::time::Duration;

use corral::domain::{
    ChannelId, Epoch, Incarnation, NodeId, NodeState, Role, RoomKey, RoomKind, TokenId,
};
use corral::store::{
    self, CallArrival, CallPlaced, Config, Consumed, Error, MemberAdded, MemberRemoved,
    NodeRegistration, QueueSave, RedirectToken, Release, Resolution, RoomFilter, Store, TokenGrant,
    TokenJoin,
};
use support::eventually;
use support::redis::{Mode, RedisProcess, unique_farm};

/// Every test has a deadline well above its need.
const WAIT: Duration = Duration::from_secs(10);

/// A store under test, and the Redis it talks to (if any), kept alive.
struct Backend {
    store: Arc<dyn Store>,
    _redis: Option<RedisProcess>,
}

impl Backend {
    fn memory(test: &str) -> Self {
        let cfg = Config {
            farm: unique_farm(test),
            ..Config::default()
        };
        Self {
            store: Arc::new(store::MemoryStore::new(&cfg.farm).expect("memory store")),
            _redis: None,
        }
    }

    async fn redis(test: &str) -> Self {
        let redis = RedisProcess::start();
        let store = store::connect(&redis_config(test, &redis.url()))
            .await
            .expect("connect to test redis");
        Self {
            store,
            _redis: Some(redis),
        }
    }
}

fn redis_config(test: &str, url: &str) -> Config {
    Config {
        farm: unique_farm(test),
        redis_url: Some(url.to_owned()),
        connect_timeout: Duration::from_millis(500),
        response_timeout: Duration::from_millis(500),
    }
}

/// Runs each listed test against both backends.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(start_paused = true)]
                async fn $name() {
                    let b = super::Backend::memory(stringify!($name));
                    super::$name(b.store.clone()).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let b = super::Backend::redis(stringify!($name)).await;
                    super::$name(b.store.clone()).await;
                }
            )*
        }
    };
}

conformance!(
    resolve_places_the_choice_once_and_keeps_it,
    placed_owner_answers_only_for_a_healthy_owner,
    resolve_refuses_ineligible_choices,
    a_suspect_node_takes_no_new_room_but_keeps_its_rooms,
    resolve_replaces_a_down_owner_with_a_larger_epoch,
    epochs_only_grow_across_release_and_replacement,
    members_join_only_on_the_owner,
    unplaced_room_is_claimed_by_a_joiner_but_not_a_down_one,
    release_only_empty_unchanged_rooms_after_linger,
    tokens_are_used_once_only_on_their_node,
    a_token_consumed_by_a_channel_is_its_again_on_a_retry,
    tokens_expire_and_stay_distinguishable,
    registration_keeps_drain_and_new_incarnation_releases_rooms,
    down_releases_every_room_in_batches,
    nodes_report_state_load_and_counts,
    rooms_page_with_a_cursor_and_filters,
    leases_have_one_holder_and_expire,
    race_many_resolvers_one_owner,
    race_two_consumers_one_winner,
    race_release_and_join_never_loses_the_member,
    bad_input_is_refused_with_a_clear_error,
    queue_documents_are_compare_and_set,
    queue_callers_change_with_their_document,
    race_queue_writers_lose_no_change,
    tokens_carry_the_agent,
    place_call_joins_on_the_owner_in_one_step,
    place_call_mints_a_token_for_the_owner_elsewhere,
    place_call_follows_the_owner_rules,
    place_call_refuses_a_suspect_choice_but_its_rooms_stay,
    join_with_token_consumes_once_and_records_the_member,
    join_with_token_follows_the_member_rules,
    race_many_placed_calls_one_owner_every_member_there,
    race_two_token_joins_one_winner,
    queue_saves_on_a_node_check_it_owns_the_queue,
);

fn node(s: &str) -> NodeId {
    NodeId::new(s).expect("node id")
}

fn conf(s: &str) -> RoomKey {
    RoomKey::parse("conference", s).expect("room")
}

fn chan(s: &str) -> ChannelId {
    ChannelId::new(s).expect("channel")
}

fn reg(id: &str, aid: &str) -> NodeRegistration {
    NodeRegistration {
        node: node(id),
        incarnation: Incarnation {
            asterisk_id: aid.to_owned(),
            started: "2026-01-01T00:00:00.000+0000".to_owned(),
        },
        sip_host: format!("{id}.farm.example:5060"),
        capacity: 100,
        max_rooms: None,
    }
}

async fn nodes(s: &Arc<dyn Store>, ids: &[&str]) {
    for id in ids {
        s.register_node(&reg(id, &format!("00:00:00:00:00:{id}")))
            .await
            .expect("register");
    }
}

fn owner(r: Resolution) -> (NodeId, Epoch, bool, Option<NodeId>) {
    match r {
        Resolution::Owner {
            node,
            epoch,
            created,
            previous,
        } => (node, epoch, created, previous),
        other => panic!("expected an owner, got {other:?}"),
    }
}

fn grant(room: &RoomKey, from: &str, to: &str) -> TokenGrant {
    TokenGrant {
        room: room.clone(),
        from: node(from),
        to: node(to),
        channel: chan("1767268800.42"),
        caller: "\"Alice\" <sip:+4930123@example.com>".to_owned(),
        hops: 1,
        agent: None,
    }
}

/// The first resolver places its choice (epoch ≥ 1, created); later
/// resolvers get the same owner untouched, whatever they choose.
async fn resolve_places_the_choice_once_and_keeps_it(s: Arc<dyn Store>) {
    nodes(&s, &["a", "b"]).await;
    let room = conf("sales");
    let (n, e, created, prev) = owner(s.resolve_placement(&room, &node("a")).await.unwrap());
    assert_eq!((n.clone(), created, prev), (node("a"), true, None));
    assert!(e.0 >= 1);
    let (n2, e2, created2, _) = owner(s.resolve_placement(&room, &node("b")).await.unwrap());
    assert_eq!((n2, e2, created2), (n, e, false));
    let detail = s.get_room(&room).await.unwrap().expect("placed");
    assert_eq!(detail.placement.node, node("a"));
    assert_eq!(detail.placement.epoch, e);
    assert_eq!(detail.placement.members, 0);
    assert!(detail.placement.empty_since_ms.is_some());
    assert!(s.get_room(&conf("other")).await.unwrap().is_none());
    // A queue of the same name is another room.
    let q = RoomKey::parse("queue", "sales").unwrap();
    let (qn, qe, qc, _) = owner(s.resolve_placement(&q, &node("b")).await.unwrap());
    assert_eq!((qn, qc), (node("b"), true));
    assert!(qe > e);
}

/// A suspect node (a failed health check) is refused as a choice for a new
/// room, keeps the rooms it has and their joiners, shows as suspect, and a
/// registration (or clearing the mark) makes it eligible again.
async fn a_suspect_node_takes_no_new_room_but_keeps_its_rooms(s: Arc<dyn Store>) {
    nodes(&s, &["a", "b"]).await;
    let (kept, new) = (conf("kept"), conf("new"));
    owner(s.resolve_placement(&kept, &node("a")).await.unwrap());
    s.set_node_suspect(&node("a"), true).await.unwrap();
    assert_eq!(
        s.resolve_placement(&new, &node("a")).await.unwrap(),
        Resolution::ChoiceIneligible { node: node("a") }
    );
    let (n, _, created, _) = owner(s.resolve_placement(&kept, &node("b")).await.unwrap());
    assert_eq!((n, created), (node("a"), false), "its room stays");
    assert!(matches!(
        s.add_member(&kept, &node("a"), &chan("j1"), Role::Participant)
            .await
            .unwrap(),
        MemberAdded::Added { .. }
    ));
    let a = s.list_nodes().await.unwrap().remove(0);
    assert!(a.suspect && a.healthy, "{a:?}");
    assert_eq!(a.state, NodeState::Up);
    s.set_node_suspect(&node("a"), false).await.unwrap();
    owner(s.resolve_placement(&new, &node("a")).await.unwrap());
    s.set_node_suspect(&node("a"), true).await.unwrap();
    nodes(&s, &["a"]).await;
    assert!(
        !s.list_nodes().await.unwrap()[0].suspect,
        "registered again"
    );
    assert!(matches!(
        s.set_node_suspect(&node("zz"), true).await.unwrap_err(),
        Error::UnknownNode { .. }
    ));
}

/// An unknown, draining, down or full node is never applied as a choice,
/// and the room stays unplaced.
async fn resolve_refuses_ineligible_choices(s: Arc<dyn Store>) {
    nodes(&s, &["a", "d", "x"]).await;
    let mut full = reg("f", "ff");
    full.max_rooms = Some(1);
    s.register_node(&full).await.unwrap();
    s.set_node_drain(&node("d"), true).await.unwrap();
    s.set_node_health(&node("x"), false).await.unwrap();
    owner(s.resolve_placement(&conf("one"), &node("f")).await.unwrap());
    let room = conf("r");
    for bad in ["unknown", "d", "x", "f"] {
        assert_eq!(
            s.resolve_placement(&room, &node(bad)).await.unwrap(),
            Resolution::ChoiceIneligible { node: node(bad) },
            "{bad}"
        );
    }
    assert!(s.get_room(&room).await.unwrap().is_none());
    // Undrain: eligible again.
    let rec = s.set_node_drain(&node("d"), false).await.unwrap();
    assert_eq!(rec.state, NodeState::Up);
    assert_eq!(
        owner(s.resolve_placement(&room, &node("d")).await.unwrap()).0,
        node("d")
    );
}

/// A draining owner keeps its room; a down owner loses it, and the next
/// resolver's choice takes it with a larger epoch.
async fn resolve_replaces_a_down_owner_with_a_larger_epoch(s: Arc<dyn Store>) {
    nodes(&s, &["a", "b"]).await;
    let room = conf("r");
    let (_, e1, _, _) = owner(s.resolve_placement(&room, &node("a")).await.unwrap());
    s.set_node_drain(&node("a"), true).await.unwrap();
    let (n, e, created, _) = owner(s.resolve_placement(&room, &node("b")).await.unwrap());
    assert_eq!(
        (n, e, created),
        (node("a"), e1, false),
        "draining owner kept"
    );
    let h = s.set_node_health(&node("a"), false).await.unwrap();
    assert!(h.changed);
    assert_eq!(h.released_rooms, 1);
    let (n, e2, created, _) = owner(s.resolve_placement(&room, &node("b")).await.unwrap());
    assert_eq!((n, created), (node("b"), true));
    assert!(e2 > e1);
    // Coming back does not give the room back.
    s.set_node_health(&node("a"), true).await.unwrap();
    assert_eq!(
        owner(s.resolve_placement(&room, &node("a")).await.unwrap()).0,
        node("b")
    );
}

/// A running room's owner without a decision: nothing for an unplaced room
/// or one whose owner is down; otherwise what `resolve_placement` answers
/// (a draining owner is still the owner).
async fn placed_owner_answers_only_for_a_healthy_owner(s: Arc<dyn Store>) {
    nodes(&s, &["a", "b"]).await;
    let room = conf("r");
    assert!(s.placed_owner(&room).await.unwrap().is_none(), "unplaced");
    let (n, e, _, _) = owner(s.resolve_placement(&room, &node("a")).await.unwrap());
    let placed = s
        .placed_owner(&room)
        .await
        .unwrap()
        .expect("a running room");
    assert_eq!(owner(placed), (n.clone(), e, false, None));
    s.set_node_drain(&node("a"), true).await.unwrap();
    let placed = s
        .placed_owner(&room)
        .await
        .unwrap()
        .expect("draining owner");
    assert_eq!(owner(placed), (n, e, false, None));
    s.set_node_health(&node("a"), false).await.unwrap();
    assert!(s.placed_owner(&room).await.unwrap().is_none(), "owner down");
    assert!(s.placed_owner(&conf("other")).await.unwrap().is_none());
}

/// A room released and placed again never reuses an epoch, so a stale
/// cleanup cannot release the new life of the room.
async fn epochs_only_grow_across_release_and_replacement(s: Arc<dyn Store>) {
    nodes(&s, &["a"]).await;
    let room = conf("r");
    let (_, e1, _, _) = owner(s.resolve_placement(&room, &node("a")).await.unwrap());
    assert_eq!(
        s.release_room(&room, e1, Duration::ZERO).await.unwrap(),
        Release::Released
    );
    let (_, e2, created, _) = owner(s.resolve_placement(&room, &node("a")).await.unwrap());
    assert!(created);
    assert!(e2 > e1, "{e2} after {e1}");
    assert_eq!(
        s.release_room(&room, e1, Duration::ZERO).await.unwrap(),
        Release::EpochChanged { current: e2 }
    );
}

/// The owner adds members (idempotently); any other node is told where the
/// room is; removal counts down and only works on the owner.
async fn members_join_only_on_the_owner(s: Arc<dyn Store>) {
    nodes(&s, &["a", "b"]).await;
    let room = conf("r");
    let (_, e, _, _) = owner(s.resolve_placement(&room, &node("a")).await.unwrap());
    assert_eq!(
        s.add_member(&room, &node("a"), &chan("c1"), Role::Participant)
            .await
            .unwrap(),
        MemberAdded::Added {
            epoch: e,
            members: 1,
            claimed: false
        }
    );
    assert_eq!(
        s.add_member(&room, &node("a"), &chan("c1"), Role::Participant)
            .await
            .unwrap(),
        MemberAdded::AlreadyMember {
            epoch: e,
            members: 1
        }
    );
    s.add_member(&room, &node("a"), &chan("c2"), Role::Agent)
        .await
        .unwrap();
    assert_eq!(
        s.add_member(&room, &node("b"), &chan("c1"), Role::Caller)
            .await
            .unwrap(),
        MemberAdded::Moved {
            owner: node("a"),
            epoch: e
        }
    );
    let d = s.get_room(&room).await.unwrap().unwrap();
    assert_eq!(d.placement.members, 2);
    assert_eq!(d.placement.empty_since_ms, None);
    assert_eq!(d.members.len(), 2);
    assert_eq!(d.members[0].channel, chan("c1"));
    assert_eq!(d.members[0].role, Role::Participant);
    assert_eq!(d.members[1].role, Role::Agent);
    assert!(d.members.iter().all(|m| m.node == node("a")));
    assert!(d.members[0].joined_ms >= d.placement.created_ms);
    assert_eq!(
        s.remove_member(&room, &node("b"), &chan("c1"))
            .await
            .unwrap(),
        MemberRemoved::NotMember
    );
    assert_eq!(
        s.remove_member(&room, &node("a"), &chan("c1"))
            .await
            .unwrap(),
        MemberRemoved::Removed {
            remaining: 1,
            epoch: e
        }
    );
    assert_eq!(
        s.remove_member(&room, &node("a"), &chan("c1"))
            .await
            .unwrap(),
        MemberRemoved::NotMember
    );
    assert_eq!(
        s.remove_member(&conf("none"), &node("a"), &chan("c1"))
            .await
            .unwrap(),
        MemberRemoved::NotMember
    );
    let listed = s.list_nodes().await.unwrap();
    let a = listed.iter().find(|n| n.id == node("a")).unwrap();
    assert_eq!((a.rooms, a.members), (1, 1));
}

/// A joiner on a node that is up or draining claims an unplaced room; a
/// down or unknown node cannot.
async fn unplaced_room_is_claimed_by_a_joiner_but_not_a_down_one(s: Arc<dyn Store>) {
    nodes(&s, &["a", "d", "x"]).await;
    s.set_node_drain(&node("d"), true).await.unwrap();
    s.set_node_health(&node("x"), false).await.unwrap();
    for (id, room) in [("a", "r1"), ("d", "r2")] {
        match s
            .add_member(&conf(room), &node(id), &chan("c"), Role::Caller)
            .await
            .unwrap()
        {
            MemberAdded::Added {
                members: 1,
                claimed: true,
                ..
            } => {}
            other => panic!("{id}: {other:?}"),
        }
        assert_eq!(
            s.get_room(&conf(room))
                .await
                .unwrap()
                .unwrap()
                .placement
                .node,
            node(id)
        );
    }
    for id in ["x", "ghost"] {
        let err = s
            .add_member(&conf("r3"), &node(id), &chan("c"), Role::Caller)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::NodeUnavailable { .. }), "{err:?}");
        assert!(!err.is_retryable());
    }
    assert!(s.get_room(&conf("r3")).await.unwrap().is_none());
}

/// Release needs the caller's epoch, no member, and the linger elapsed by
/// the store's clock.
async fn release_only_empty_unchanged_rooms_after_linger(s: Arc<dyn Store>) {
    nodes(&s, &["a"]).await;
    let room = conf("r");
    assert_eq!(
        s.release_room(&room, Epoch(1), Duration::ZERO)
            .await
            .unwrap(),
        Release::NotFound
    );
    let (_, e, _, _) = owner(s.resolve_placement(&room, &node("a")).await.unwrap());
    s.add_member(&room, &node("a"), &chan("c"), Role::Participant)
        .await
        .unwrap();
    assert_eq!(
        s.release_room(&room, e, Duration::ZERO).await.unwrap(),
        Release::NotEmpty
    );
    assert_eq!(
        s.release_room(&room, Epoch(e.0 + 7), Duration::ZERO)
            .await
            .unwrap(),
        Release::EpochChanged { current: e }
    );
    s.remove_member(&room, &node("a"), &chan("c"))
        .await
        .unwrap();
    let linger = Duration::from_millis(300);
    assert_eq!(
        s.release_room(&room, e, Duration::from_secs(3600))
            .await
            .unwrap(),
        Release::TooSoon
    );
    eventually(WAIT, "release after the linger", || {
        let s = s.clone();
        let room = room.clone();
        async move {
            match s.release_room(&room, e, linger).await.unwrap() {
                Release::Released => Some(()),
                Release::TooSoon => None,
                other => panic!("{other:?}"),
            }
        }
    })
    .await;
    assert!(s.get_room(&room).await.unwrap().is_none());
    let a = s.list_nodes().await.unwrap().remove(0);
    assert_eq!((a.rooms, a.members), (0, 0));
}

/// A token is consumed once, only on its destination; a wrong node leaves
/// it usable; a used or unknown token is Unknown.
async fn tokens_are_used_once_only_on_their_node(s: Arc<dyn Store>) {
    let room = conf("r");
    let mut rng = rand::rng();
    let t = TokenId::generate(&mut rng);
    let g = grant(&room, "a", "b");
    s.mint_token(&t, &g, Duration::from_secs(30)).await.unwrap();
    let err = s
        .mint_token(&t, &g, Duration::from_secs(30))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TokenExists { .. }), "{err:?}");
    let peek = s.peek_token(&t).await.unwrap().expect("minted");
    assert_eq!(peek.grant, g);
    assert_eq!(peek.expires_ms - peek.minted_ms, 30_000);
    match s.consume_token(&t, &node("c")).await.unwrap() {
        Consumed::WrongNode(r) => assert_eq!(r.grant.to, node("b")),
        other => panic!("{other:?}"),
    }
    match s.consume_token(&t, &node("b")).await.unwrap() {
        Consumed::Ok(r) => assert_eq!(r, peek),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        s.consume_token(&t, &node("b")).await.unwrap(),
        Consumed::Unknown
    );
    assert!(s.peek_token(&t).await.unwrap().is_none());
    let never = TokenId::generate(&mut rng);
    assert_eq!(
        s.consume_token(&never, &node("b")).await.unwrap(),
        Consumed::Unknown
    );
}

/// A token consumed by a named channel is that channel's: consuming it
/// again by the same channel on the same node (a retry after a timeout that
/// may have consumed it) gets it again; any other consumer, or the same
/// channel on another node, gets Unknown, and nobody can peek at it.
async fn a_token_consumed_by_a_channel_is_its_again_on_a_retry(s: Arc<dyn Store>) {
    let t = TokenId::generate(&mut rand::rng());
    let g = grant(&conf("r"), "a", "b");
    s.mint_token(&t, &g, Duration::from_secs(30)).await.unwrap();
    let (me, other) = (ChannelId::new("me").unwrap(), ChannelId::new("o").unwrap());
    assert!(matches!(
        s.consume_token_as(&t, &node("c"), &me).await.unwrap(),
        Consumed::WrongNode(_)
    ));
    let first = match s.consume_token_as(&t, &node("b"), &me).await.unwrap() {
        Consumed::Ok(r) => r,
        other => panic!("{other:?}"),
    };
    assert_eq!(first.grant, g);
    assert_eq!(
        s.consume_token_as(&t, &node("b"), &me).await.unwrap(),
        Consumed::Ok(first)
    );
    for (n, c) in [("b", &other), ("c", &me)] {
        assert_eq!(
            s.consume_token_as(&t, &node(n), c).await.unwrap(),
            Consumed::Unknown
        );
    }
    assert_eq!(
        s.consume_token(&t, &node("b")).await.unwrap(),
        Consumed::Unknown
    );
    assert!(s.peek_token(&t).await.unwrap().is_none());
}

/// Past its ttl a token is Expired (not consumed, not Unknown) during the
/// tombstone.
async fn tokens_expire_and_stay_distinguishable(s: Arc<dyn Store>) {
    let t = TokenId::generate(&mut rand::rng());
    s.mint_token(&t, &grant(&conf("r"), "a", "b"), Duration::from_millis(100))
        .await
        .unwrap();
    eventually(WAIT, "the token expires", || {
        let s = s.clone();
        let t = t.clone();
        async move {
            // A wrong node never consumes it, so polling from one is safe.
            match s.consume_token(&t, &node("c")).await.unwrap() {
                Consumed::Expired(r) => Some(r),
                Consumed::WrongNode(_) => None,
                other => panic!("{other:?}"),
            }
        }
    })
    .await;
    assert!(matches!(
        s.consume_token(&t, &node("b")).await.unwrap(),
        Consumed::Expired(_)
    ));
    assert!(s.peek_token(&t).await.unwrap().is_some());
}

/// Registration is idempotent, keeps the drain flag, and a new incarnation
/// releases the rooms of the old one.
async fn registration_keeps_drain_and_new_incarnation_releases_rooms(s: Arc<dyn Store>) {
    let first = s.register_node(&reg("a", "aa")).await.unwrap();
    assert!(first.new_incarnation);
    assert_eq!(first.released_rooms, 0);
    let again = s.register_node(&reg("a", "aa")).await.unwrap();
    assert!(!again.new_incarnation);
    for i in 0..3 {
        owner(
            s.resolve_placement(&conf(&format!("r{i}")), &node("a"))
                .await
                .unwrap(),
        );
    }
    s.set_node_drain(&node("a"), true).await.unwrap();
    let mut r = reg("a", "aa");
    r.capacity = 250;
    r.max_rooms = Some(9);
    s.register_node(&r).await.unwrap();
    let rec = s.list_nodes().await.unwrap().remove(0);
    assert_eq!(rec.state, NodeState::Draining);
    assert_eq!((rec.capacity, rec.max_rooms, rec.rooms), (250, Some(9), 3));
    let restarted = s.register_node(&reg("a", "bb")).await.unwrap();
    assert!(restarted.new_incarnation);
    assert_eq!(restarted.released_rooms, 3);
    let rec = s.list_nodes().await.unwrap().remove(0);
    assert_eq!(rec.rooms, 0);
    assert_eq!(rec.incarnation.unwrap().asterisk_id, "bb");
    assert!(rec.draining, "drain survives a restart");
    assert_eq!(rec.max_rooms, None);
}

/// Marking a node down releases all its rooms, more than one batch of
/// them, and leaves other nodes' rooms alone.
async fn down_releases_every_room_in_batches(s: Arc<dyn Store>) {
    nodes(&s, &["a", "b"]).await;
    let n = store::RELEASE_BATCH * 2 + 17;
    for i in 0..n {
        let room = conf(&format!("r{i:05}"));
        owner(s.resolve_placement(&room, &node("a")).await.unwrap());
        if i % 100 == 0 {
            s.add_member(&room, &node("a"), &chan("c"), Role::Participant)
                .await
                .unwrap();
        }
    }
    owner(
        s.resolve_placement(&conf("keep"), &node("b"))
            .await
            .unwrap(),
    );
    let h = s.set_node_health(&node("a"), false).await.unwrap();
    assert!(h.changed);
    assert_eq!(h.released_rooms as usize, n);
    let again = s.set_node_health(&node("a"), false).await.unwrap();
    assert_eq!((again.changed, again.released_rooms), (false, 0));
    let listed = s.list_nodes().await.unwrap();
    assert_eq!(listed[0].state, NodeState::Down);
    assert_eq!((listed[0].rooms, listed[0].members), (0, 0));
    assert_eq!(listed[1].rooms, 1);
    let err = s.set_node_health(&node("ghost"), false).await.unwrap_err();
    assert!(matches!(err, Error::UnknownNode { .. }));
}

/// list_nodes shows the effective state, reported load and counts.
async fn nodes_report_state_load_and_counts(s: Arc<dyn Store>) {
    nodes(&s, &["b", "a", "c"]).await;
    s.report_load(&node("a"), 42).await.unwrap();
    s.set_node_drain(&node("b"), true).await.unwrap();
    s.set_node_health(&node("c"), false).await.unwrap();
    let err = s.report_load(&node("ghost"), 1).await.unwrap_err();
    assert!(matches!(err, Error::UnknownNode { .. }));
    let list = s.list_nodes().await.unwrap();
    let ids: Vec<_> = list.iter().map(|n| n.id.as_str().to_owned()).collect();
    assert_eq!(ids, ["a", "b", "c"]);
    assert_eq!(list[0].channels, 42);
    assert_eq!(
        [list[0].state, list[1].state, list[2].state],
        [NodeState::Up, NodeState::Draining, NodeState::Down]
    );
    assert!(list[1].healthy && list[1].draining && !list[2].healthy);
    assert_eq!(list[0].sip_host, "a.farm.example:5060");
    assert!(list[0].updated_ms > 0);
}

/// Pages of any size walk every room once, in (node, kind, name) order,
/// with node and kind filters; a foreign cursor is refused.
async fn rooms_page_with_a_cursor_and_filters(s: Arc<dyn Store>) {
    nodes(&s, &["n1", "n2", "n3"]).await;
    let mut all = Vec::new();
    for i in 0..40 {
        let kind = if i % 3 == 0 { "queue" } else { "conference" };
        let room = RoomKey::parse(kind, &format!("room-{i:02}")).unwrap();
        let n = node(["n1", "n3"][i % 2]);
        owner(s.resolve_placement(&room, &n).await.unwrap());
        all.push((n, room));
    }
    all.sort();
    for limit in [1, 7, 40, 100] {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = s
                .list_rooms(&RoomFilter::default(), cursor.as_deref(), limit)
                .await
                .unwrap();
            assert!(page.rooms.len() <= limit);
            seen.extend(page.rooms.into_iter().map(|p| (p.node, p.room)));
            match page.next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(seen, all, "limit {limit}");
    }
    let filter = RoomFilter {
        node: Some(node("n3")),
        kind: Some(RoomKind::Queue),
    };
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = s.list_rooms(&filter, cursor.as_deref(), 3).await.unwrap();
        seen.extend(page.rooms.into_iter().map(|p| (p.node, p.room)));
        match page.next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let want: Vec<_> = all
        .iter()
        .filter(|(n, r)| *n == node("n3") && r.kind == RoomKind::Queue)
        .cloned()
        .collect();
    assert_eq!(seen, want);
    let empty = s
        .list_rooms(
            &RoomFilter {
                node: Some(node("n2")),
                kind: None,
            },
            None,
            10,
        )
        .await
        .unwrap();
    assert!(empty.rooms.is_empty() && empty.next.is_none());
    for bad in ["garbage", "n1/party:x", "{corral:x}/conference:a"] {
        let err = s
            .list_rooms(&RoomFilter::default(), Some(bad), 10)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidInput { .. }), "{bad}: {err:?}");
    }
}

/// One replica holds a node's lease; it renews; another takes it after a
/// release or an expiry, never while it is held.
async fn leases_have_one_holder_and_expire(s: Arc<dyn Store>) {
    let n = node("a");
    let ttl = Duration::from_millis(300);
    assert!(s.acquire_lease(&n, "r1", ttl).await.unwrap());
    assert!(!s.acquire_lease(&n, "r2", ttl).await.unwrap());
    assert!(s.acquire_lease(&n, "r1", ttl).await.unwrap());
    s.release_lease(&n, "r2").await.unwrap();
    assert!(!s.acquire_lease(&n, "r2", ttl).await.unwrap());
    s.release_lease(&n, "r1").await.unwrap();
    assert!(s.acquire_lease(&n, "r2", ttl).await.unwrap());
    eventually(WAIT, "r2's lease lapses", || {
        let s = s.clone();
        let n = n.clone();
        async move { s.acquire_lease(&n, "r3", ttl).await.unwrap().then_some(()) }
    })
    .await;
    s.ping().await.unwrap();
}

/// 100 concurrent resolvers of one new room, each with its own choice, all
/// get the same owner and epoch, and exactly one of them created it.
async fn race_many_resolvers_one_owner(s: Arc<dyn Store>) {
    let ids: Vec<String> = (0..10).map(|i| format!("n{i}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    nodes(&s, &refs).await;
    for round in 0..5 {
        let room = conf(&format!("hot-{round}"));
        let tasks: Vec<_> = (0..100)
            .map(|i| {
                let s = s.clone();
                let room = room.clone();
                let choice = node(&format!("n{}", i % 10));
                tokio::spawn(async move { s.resolve_placement(&room, &choice).await })
            })
            .collect();
        let mut answers = Vec::new();
        for t in tasks {
            answers.push(owner(t.await.unwrap().unwrap()));
        }
        let (n0, e0) = (answers[0].0.clone(), answers[0].1);
        assert!(
            answers.iter().all(|a| a.0 == n0 && a.1 == e0),
            "{answers:?}"
        );
        assert_eq!(answers.iter().filter(|a| a.2).count(), 1);
    }
}

/// Two nodes' worth of consumers race for each token; exactly one wins.
async fn race_two_consumers_one_winner(s: Arc<dyn Store>) {
    let mut rng = rand::rng();
    for _ in 0..30 {
        let t = TokenId::generate(&mut rng);
        s.mint_token(&t, &grant(&conf("r"), "a", "b"), Duration::from_secs(30))
            .await
            .unwrap();
        let tasks: Vec<_> = (0..2)
            .map(|_| {
                let s = s.clone();
                let t = t.clone();
                tokio::spawn(async move { s.consume_token(&t, &node("b")).await })
            })
            .collect();
        let mut wins = 0;
        for task in tasks {
            match task.await.unwrap().unwrap() {
                Consumed::Ok(_) => wins += 1,
                Consumed::Unknown => {}
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(wins, 1);
    }
}

/// A release racing a join never loses the member: either the release
/// loses (NotEmpty) or the join claims the room anew.
async fn race_release_and_join_never_loses_the_member(s: Arc<dyn Store>) {
    nodes(&s, &["a"]).await;
    for i in 0..40 {
        let room = conf(&format!("r{i}"));
        let (_, e, _, _) = owner(s.resolve_placement(&room, &node("a")).await.unwrap());
        let (s1, s2) = (s.clone(), s.clone());
        let (r1, r2) = (room.clone(), room.clone());
        let release =
            tokio::spawn(async move { s1.release_room(&r1, e, Duration::ZERO).await.unwrap() });
        let join = tokio::spawn(async move {
            s2.add_member(&r2, &node("a"), &chan("c"), Role::Participant)
                .await
                .unwrap()
        });
        let (released, joined) = (release.await.unwrap(), join.await.unwrap());
        let d = s.get_room(&room).await.unwrap().expect("the member's room");
        assert_eq!(d.members.len(), 1, "{released:?} {joined:?}");
        match (released, joined) {
            (Release::Released, MemberAdded::Added { claimed: true, .. })
            | (Release::NotEmpty, MemberAdded::Added { claimed: false, .. }) => {}
            other => panic!("impossible interleaving {other:?}"),
        }
    }
}

/// Ids that could reach other keys never become ids; free text is bounded.
async fn bad_input_is_refused_with_a_clear_error(s: Arc<dyn Store>) {
    for bad in ["{corral:other}", "a:b", "a b", "", "x\n"] {
        assert!(NodeId::new(bad).is_err());
        assert!(corral::domain::RoomName::new(bad).is_err());
    }
    let mut g = grant(&conf("r"), "a", "b");
    g.caller = "x".repeat(store::MAX_CALLER_LEN + 1);
    let t = TokenId::generate(&mut rand::rng());
    let err = s
        .mint_token(&t, &g, Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput { what: "caller", .. }));
    assert!(!err.is_retryable());
    let mut r = reg("a", "aa");
    r.sip_host = String::new();
    assert!(matches!(
        s.register_node(&r).await.unwrap_err(),
        Error::InvalidInput { .. }
    ));
    // Lua-hostile free text is stored as a value, never interpreted.
    g.caller = "'); redis.call('FLUSHALL') --\"\\ {corral:x}".to_owned();
    s.mint_token(&t, &g, Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        s.peek_token(&t).await.unwrap().unwrap().grant.caller,
        g.caller
    );
    assert!(
        store::MemoryStore::new("{bad}").is_err(),
        "farm names are ids"
    );
}

// ---- Redis only ---------------------------------------------------------

/// Every key a farm writes sits under its hash tag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_keys_all_carry_the_farm_hash_tag() {
    let redis = RedisProcess::start_private(Mode::Standalone);
    let cfg = redis_config("keys", &redis.url());
    let s = store::connect(&cfg).await.unwrap();
    nodes(&s, &["a"]).await;
    let room = conf("r");
    owner(s.resolve_placement(&room, &node("a")).await.unwrap());
    s.add_member(&room, &node("a"), &chan("c"), Role::Participant)
        .await
        .unwrap();
    s.mint_token(
        &TokenId::generate(&mut rand::rng()),
        &grant(&room, "a", "a"),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    s.acquire_lease(&node("a"), "r1", Duration::from_secs(5))
        .await
        .unwrap();
    let keys: Vec<String> = ::redis::cmd("KEYS")
        .arg("*")
        .query(&mut redis.connection())
        .unwrap();
    assert_eq!(keys.len(), 8, "{keys:?}");
    let tag = format!("{{corral:{}}}:", cfg.farm);
    assert!(keys.iter().all(|k| k.starts_with(&tag)), "{keys:?}");
}

/// Redis killed: every operation fails fast with a retryable typed error.
/// Redis restarted on the same port, empty and without scripts: the same
/// store works again (reconnect + NOSCRIPT reload), without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_fails_fast_then_recovers_after_restart() {
    let mut redis = RedisProcess::start_private(Mode::Standalone);
    let s = store::connect(&redis_config("chaos", &redis.url()))
        .await
        .unwrap();
    nodes(&s, &["a"]).await;
    owner(
        s.resolve_placement(&conf("before"), &node("a"))
            .await
            .unwrap(),
    );
    redis.kill();
    for _ in 0..3 {
        let started = tokio::time::Instant::now();
        let err = s
            .resolve_placement(&conf("during"), &node("a"))
            .await
            .unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "took {:?}",
            started.elapsed()
        );
        assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
        assert!(err.is_retryable(), "{err:?}");
        let err = s.ping().await.unwrap_err();
        assert!(err.is_retryable(), "{err:?}");
    }
    redis.restart();
    eventually(WAIT, "the store works again after the restart", || {
        let s = s.clone();
        async move { s.ping().await.ok() }
    })
    .await;
    // Scripts are gone from the fresh server: the call reloads them.
    nodes(&s, &["a"]).await;
    let (n, _, created, _) = owner(
        s.resolve_placement(&conf("after"), &node("a"))
            .await
            .unwrap(),
    );
    assert_eq!((n, created), (node("a"), true));
}

/// Nothing listens: connect fails fast with a retryable error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_unreachable_at_start_fails_fast() {
    let mut redis = RedisProcess::start_private(Mode::Standalone);
    let url = redis.url();
    redis.kill();
    let started = tokio::time::Instant::now();
    let err = store::connect(&redis_config("down", &url))
        .await
        .err()
        .expect("no redis, no store");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(err.is_retryable(), "{err:?}");
    let err = store::connect(&redis_config("url", "http://127.0.0.1:1"))
        .await
        .err()
        .expect("bad url");
    assert!(matches!(err, Error::Config { .. }), "{err:?}");
}

/// A real one-node Redis Cluster (`cluster-enabled yes`, all slots added)
/// runs the scripts through a `redis+cluster://` URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_runs_the_store() {
    let redis = RedisProcess::start_private(Mode::Cluster);
    assert!(redis.url().starts_with("redis+cluster://"));
    let s = store::connect(&redis_config("cluster", &redis.url()))
        .await
        .unwrap();
    smoke(s).await;
}

/// A real Sentinel monitoring a real master: `redis+sentinel://` finds the
/// master and runs the scripts there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_sentinel_runs_the_store() {
    let master = RedisProcess::start_private(Mode::Standalone);
    let sentinel = RedisProcess::start_private(Mode::Sentinel {
        master_port: master.port(),
    });
    let url = format!("redis+sentinel://127.0.0.1:{}/mymaster", sentinel.port());
    let s = store::connect(&redis_config("sentinel", &url))
        .await
        .unwrap();
    smoke(s).await;
    let n: i64 = ::redis::cmd("DBSIZE")
        .query(&mut master.connection())
        .unwrap();
    assert!(n > 0, "the data went to the master");
}

/// The core path once: register, place, join, token, release.
async fn smoke(s: Arc<dyn Store>) {
    nodes(&s, &["a", "b"]).await;
    let room = conf("r");
    let (n, e, _, _) = owner(s.resolve_placement(&room, &node("a")).await.unwrap());
    assert_eq!(n, node("a"));
    // The placed room again: answered from the replica's copy of the nodes.
    assert_eq!(
        owner(s.resolve_placement(&room, &node("b")).await.unwrap()),
        (node("a"), e, false, None)
    );
    assert!(matches!(
        s.add_member(&room, &node("b"), &chan("c"), Role::Caller)
            .await
            .unwrap(),
        MemberAdded::Moved { .. }
    ));
    let t = TokenId::generate(&mut rand::rng());
    s.mint_token(&t, &grant(&room, "b", "a"), Duration::from_secs(5))
        .await
        .unwrap();
    assert!(matches!(
        s.consume_token(&t, &node("a")).await.unwrap(),
        Consumed::Ok(_)
    ));
    s.add_member(&room, &node("a"), &chan("c"), Role::Caller)
        .await
        .unwrap();
    s.remove_member(&room, &node("a"), &chan("c"))
        .await
        .unwrap();
    assert_eq!(
        s.release_room(&room, e, Duration::ZERO).await.unwrap(),
        Release::Released
    );
    assert_eq!(s.list_nodes().await.unwrap().len(), 2);
    s.ping().await.unwrap();
}

/// A real Sentinel failover: the master dies, the Sentinel promotes its
/// replica, and the same store follows it (asks the Sentinels again after
/// the connection errors) without being recreated; the placement written
/// before the failover is still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_sentinel_failover_is_followed() {
    let mut master = RedisProcess::start_private(Mode::Standalone);
    let replica = RedisProcess::start_private(Mode::Replica {
        master_port: master.port(),
    });
    eventually(WAIT, "the replica is in sync", || {
        let mut c = replica.connection();
        async move {
            let info: String = ::redis::cmd("INFO").arg("replication").query(&mut c).ok()?;
            info.contains("master_link_status:up").then_some(())
        }
    })
    .await;
    let sentinel = RedisProcess::start_private(Mode::Sentinel {
        master_port: master.port(),
    });
    eventually(WAIT, "the sentinel knows the replica", || {
        let mut c = sentinel.connection();
        async move {
            let replicas: Vec<::redis::Value> = ::redis::cmd("SENTINEL")
                .arg("REPLICAS")
                .arg("mymaster")
                .query(&mut c)
                .ok()?;
            (!replicas.is_empty()).then_some(())
        }
    })
    .await;
    let url = format!("redis+sentinel://127.0.0.1:{}/mymaster", sentinel.port());
    let s = store::connect(&redis_config("failover", &url))
        .await
        .unwrap();
    nodes(&s, &["a", "b"]).await;
    let room = conf("r");
    let (_, e, _, _) = owner(s.resolve_placement(&room, &node("a")).await.unwrap());
    let _: i64 = ::redis::cmd("WAIT")
        .arg(1)
        .arg(2000)
        .query(&mut master.connection())
        .unwrap();
    master.kill();
    let after = eventually(
        Duration::from_secs(30),
        "the store reaches the promoted replica",
        || {
            let s = s.clone();
            let room = room.clone();
            async move { s.resolve_placement(&room, &node("b")).await.ok() }
        },
    )
    .await;
    assert_eq!(
        owner(after),
        (node("a"), e, false, None),
        "the placement survived the failover"
    );
}

fn qname(s: &str) -> corral::domain::RoomName {
    corral::domain::RoomName::new(s).expect("queue name")
}

async fn queue_documents_are_compare_and_set(s: Arc<dyn Store>) {
    let q = qname("support");
    assert_eq!(s.load_queue(&q).await.unwrap(), None);
    assert_eq!(s.queue_version(&q).await.unwrap(), 0);
    assert!(s.list_queues().await.unwrap().is_empty());
    // Version 0 means "never saved"; a wrong version is refused.
    assert_eq!(s.save_queue(&q, 1, "{}").await.unwrap(), None);
    assert_eq!(s.save_queue(&q, 0, "{\"a\":1}").await.unwrap(), Some(1));
    assert_eq!(
        s.save_queue(&q, 0, "{\"a\":2}").await.unwrap(),
        None,
        "stale writer"
    );
    assert_eq!(s.save_queue(&q, 1, "{\"a\":3}").await.unwrap(), Some(2));
    let d = s.load_queue(&q).await.unwrap().unwrap();
    assert_eq!((d.version, d.doc.as_str()), (2, "{\"a\":3}"));
    assert_eq!(s.queue_version(&q).await.unwrap(), 2);
    s.save_queue(&qname("billing"), 0, "{}").await.unwrap();
    assert_eq!(
        s.list_queues().await.unwrap(),
        vec![qname("billing"), qname("support")]
    );
    // Too large a document is refused, and nothing changes.
    let huge = "x".repeat(store::MAX_QUEUE_DOC + 1);
    assert!(matches!(
        s.save_queue(&q, 2, &huge).await,
        Err(Error::InvalidInput { .. })
    ));
    assert_eq!(s.load_queue(&q).await.unwrap().unwrap().version, 2);
}

/// 20 writers each add one entry by load → change → compare-and-set,
/// retrying on conflict: every entry is there at the end.
async fn race_queue_writers_lose_no_change(s: Arc<dyn Store>) {
    let q = qname("race");
    let mut tasks = Vec::new();
    for i in 0..20u32 {
        let s = s.clone();
        let q = q.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let (v, mut doc): (u64, Vec<u32>) = match s.load_queue(&q).await.unwrap() {
                    Some(d) => (d.version, serde_json::from_str(&d.doc).unwrap()),
                    None => (0, Vec::new()),
                };
                doc.push(i);
                let text = serde_json::to_string(&doc).unwrap();
                if s.save_queue(&q, v, &text).await.unwrap().is_some() {
                    return;
                }
                tokio::task::yield_now().await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let d = s.load_queue(&q).await.unwrap().unwrap();
    let mut got: Vec<u32> = serde_json::from_str(&d.doc).unwrap();
    got.sort();
    assert_eq!(got, (0..20).collect::<Vec<_>>());
    assert_eq!(d.version, 20);
}

async fn tokens_carry_the_agent(s: Arc<dyn Store>) {
    nodes(&s, &["a", "b"]).await;
    let room = RoomKey::parse("queue", "support").unwrap();
    let token = TokenId::new("agenttoken1").unwrap();
    let mut g = grant(&room, "a", "b");
    g.agent = Some(corral::domain::AgentId::new("alice").unwrap());
    s.mint_token(&token, &g, Duration::from_secs(5))
        .await
        .unwrap();
    match s.consume_token(&token, &node("b")).await.unwrap() {
        Consumed::Ok(rec) => assert_eq!(rec.grant, g),
        other => panic!("{other:?}"),
    }
}

/// Caller entries live apart from the document, ordered by seq, and change
/// only with a successful compare-and-set.
async fn queue_callers_change_with_their_document(s: Arc<dyn Store>) {
    let q = qname("entries");
    let e = |seq: u64| (seq, format!("{{\"seq\":{seq}}}"));
    assert_eq!(
        s.save_queue_parts(&q, 0, "{}", &[], &[e(2), e(0), e(1)])
            .await
            .unwrap(),
        Some(1)
    );
    let d = s.load_queue(&q).await.unwrap().unwrap();
    assert_eq!(d.callers, vec![e(0).1, e(1).1, e(2).1], "in seq order");
    // A stale writer changes nothing.
    assert_eq!(
        s.save_queue_parts(&q, 0, "{}", &[0, 1, 2], &[])
            .await
            .unwrap(),
        None
    );
    assert_eq!(s.load_queue(&q).await.unwrap().unwrap().callers.len(), 3);
    // Drop one, rewrite one, add one.
    let changed = (1, "{\"seq\":1,\"x\":true}".to_string());
    assert_eq!(
        s.save_queue_parts(&q, 1, "{\"n\":2}", &[0, 1], &[changed.clone(), e(5)])
            .await
            .unwrap(),
        Some(2)
    );
    let d = s.load_queue(&q).await.unwrap().unwrap();
    assert_eq!(d.doc, "{\"n\":2}");
    assert_eq!(d.callers, vec![changed.1, e(2).1, e(5).1]);
    // Too many bytes at once is refused whole.
    let big = vec![(9, "x".repeat(store::MAX_QUEUE_DOC))];
    assert!(matches!(
        s.save_queue_parts(&q, 2, "{}", &[], &big).await,
        Err(Error::InvalidInput { .. })
    ));
    assert_eq!(s.load_queue(&q).await.unwrap().unwrap().callers.len(), 3);
}

// ---- the merged call-path operations (one round trip per step) ----------

fn arrival(room: &RoomKey, landing: &str, channel: &str, token: Option<&TokenId>) -> CallArrival {
    CallArrival {
        room: room.clone(),
        landing: node(landing),
        channel: chan(channel),
        role: if room.kind == RoomKind::Queue {
            Role::Caller
        } else {
            Role::Participant
        },
        redirect: token.map(|t| RedirectToken {
            token: t.clone(),
            caller: "\"Bob\" <sip:200@example.com>".to_owned(),
            hops: 1,
            agent: None,
            ttl: Duration::from_secs(30),
        }),
    }
}

/// A call landing on the node the room lives on (or is placed on) is its
/// member after the one step: placement and member record together, as
/// `resolve_placement` then `add_member` would leave them; a repeat is
/// harmless.
async fn place_call_joins_on_the_owner_in_one_step(s: Arc<dyn Store>) {
    nodes(&s, &["a", "b"]).await;
    let room = conf("one");
    let t = TokenId::generate(&mut rand::rng());
    let first = s
        .place_call(&arrival(&room, "a", "c1", Some(&t)), &node("a"))
        .await
        .unwrap();
    let CallPlaced::Joined {
        epoch,
        members: 1,
        created: true,
        previous: None,
        already: false,
    } = first
    else {
        panic!("{first:?}")
    };
    // No token is minted when the call stays.
    assert_eq!(s.peek_token(&t).await.unwrap(), None);
    // An existing room: the choice is ignored, the member added.
    assert_eq!(
        s.place_call(&arrival(&room, "a", "c2", None), &node("b"))
            .await
            .unwrap(),
        CallPlaced::Joined {
            epoch,
            members: 2,
            created: false,
            previous: None,
            already: false
        }
    );
    assert_eq!(
        s.place_call(&arrival(&room, "a", "c2", None), &node("b"))
            .await
            .unwrap(),
        CallPlaced::Joined {
            epoch,
            members: 2,
            created: false,
            previous: None,
            already: true
        }
    );
    let d = s.get_room(&room).await.unwrap().unwrap();
    assert_eq!(
        (d.placement.node.clone(), d.placement.epoch),
        (node("a"), epoch)
    );
    assert_eq!(d.placement.members, 2);
    assert_eq!(d.placement.empty_since_ms, None);
    assert_eq!(
        d.members
            .iter()
            .map(|m| m.channel.clone())
            .collect::<Vec<_>>(),
        [chan("c1"), chan("c2")]
    );
    assert!(d.members.iter().all(|m| m.role == Role::Participant));
    // The same bookkeeping as the separate operations: the node's counts,
    // and the last one out starts the linger.
    let a = s.list_nodes().await.unwrap();
    let a = a.iter().find(|n| n.id == node("a")).unwrap();
    assert_eq!((a.rooms, a.members), (1, 2));
    for c in ["c1", "c2"] {
        s.remove_member(&room, &node("a"), &chan(c)).await.unwrap();
    }
    assert_eq!(
        s.release_room(&room, epoch, Duration::ZERO).await.unwrap(),
        Release::Released
    );
    // A queue caller is recorded with its role.
    let q = RoomKey::parse("queue", "one").unwrap();
    s.place_call(&arrival(&q, "b", "q1", None), &node("b"))
        .await
        .unwrap();
    let d = s.get_room(&q).await.unwrap().unwrap();
    assert_eq!(d.members[0].role, Role::Caller);
}

/// A call landing away from its room gets, in the same step, a token bound
/// to the owner (grant: its room, from the landing node, its channel); no
/// member is recorded, and no token is minted when none is asked for.
async fn place_call_mints_a_token_for_the_owner_elsewhere(s: Arc<dyn Store>) {
    nodes(&s, &["a", "b"]).await;
    let room = conf("away");
    let (_, e, _, _) = owner(s.resolve_placement(&room, &node("a")).await.unwrap());
    let t = TokenId::generate(&mut rand::rng());
    let placed = s
        .place_call(&arrival(&room, "b", "x1", Some(&t)), &node("b"))
        .await
        .unwrap();
    let CallPlaced::Elsewhere {
        owner: o,
        epoch,
        created: false,
        previous: None,
        token: Some(record),
    } = placed
    else {
        panic!("{placed:?}")
    };
    assert_eq!((o, epoch), (node("a"), e));
    assert_eq!(record.grant.room, room);
    assert_eq!(
        (record.grant.from.clone(), record.grant.to.clone()),
        (node("b"), node("a"))
    );
    assert_eq!(record.grant.channel, chan("x1"));
    assert_eq!(record.grant.hops, 1);
    assert_eq!(record.grant.caller, "\"Bob\" <sip:200@example.com>");
    assert!(record.expires_ms >= record.minted_ms + 30_000);
    assert_eq!(s.peek_token(&t).await.unwrap(), Some(record.clone()));
    assert_eq!(
        s.get_room(&room).await.unwrap().unwrap().placement.members,
        0
    );
    // Only the owner consumes it.
    assert!(matches!(
        s.consume_token(&t, &node("b")).await.unwrap(),
        Consumed::WrongNode(_)
    ));
    assert_eq!(
        s.consume_token(&t, &node("a")).await.unwrap(),
        Consumed::Ok(record)
    );
    // No token asked for (past the hop limit): the owner only.
    assert_eq!(
        s.place_call(&arrival(&room, "b", "x2", None), &node("b"))
            .await
            .unwrap(),
        CallPlaced::Elsewhere {
            owner: node("a"),
            epoch: e,
            created: false,
            previous: None,
            token: None
        }
    );
    // A new room placed by the choice on another node: created there.
    let t2 = TokenId::generate(&mut rand::rng());
    let placed = s
        .place_call(&arrival(&conf("new"), "b", "x3", Some(&t2)), &node("a"))
        .await
        .unwrap();
    assert!(
        matches!(&placed, CallPlaced::Elsewhere { owner, created: true, token: Some(_), .. } if *owner == node("a")),
        "{placed:?}"
    );
    // An agent's token carries the agent.
    let q = RoomKey::parse("queue", "help").unwrap();
    s.resolve_placement(&q, &node("a")).await.unwrap();
    let t3 = TokenId::generate(&mut rand::rng());
    let mut a = arrival(&q, "b", "x4", Some(&t3));
    a.role = Role::Agent;
    if let Some(r) = a.redirect.as_mut() {
        r.agent = Some(corral::domain::AgentId::new("ann").unwrap());
    }
    s.place_call(&a, &node("b")).await.unwrap();
    let rec = s.peek_token(&t3).await.unwrap().unwrap();
    assert_eq!(
        rec.grant.agent.map(|a| a.to_string()),
        Some("ann".to_owned())
    );
    // Bad input is refused before anything is written.
    let mut long = arrival(&conf("long"), "b", "x5", Some(&t3));
    if let Some(r) = long.redirect.as_mut() {
        r.caller = "x".repeat(store::MAX_CALLER_LEN + 1);
    }
    assert!(matches!(
        s.place_call(&long, &node("a")).await,
        Err(Error::InvalidInput { .. })
    ));
    assert!(s.get_room(&conf("long")).await.unwrap().is_none());
}

/// The owner rules of `resolve_placement` hold inside `place_call`: an
/// ineligible choice writes nothing; a down owner is replaced by the
/// choice with a larger epoch and the room starts empty.
async fn place_call_follows_the_owner_rules(s: Arc<dyn Store>) {
    nodes(&s, &["a", "b", "d"]).await;
    s.set_node_drain(&node("d"), true).await.unwrap();
    let room = conf("rules");
    for choice in ["d", "zz"] {
        assert_eq!(
            s.place_call(&arrival(&room, "a", "c1", None), &node(choice))
                .await
                .unwrap(),
            CallPlaced::ChoiceIneligible { node: node(choice) }
        );
    }
    assert!(s.get_room(&room).await.unwrap().is_none());
    // A draining owner keeps its room and takes joiners.
    let (_, e, _, _) = owner(s.resolve_placement(&room, &node("a")).await.unwrap());
    s.add_member(&room, &node("a"), &chan("old"), Role::Participant)
        .await
        .unwrap();
    s.set_node_drain(&node("a"), true).await.unwrap();
    assert!(matches!(
        s.place_call(&arrival(&room, "a", "c2", None), &node("b")).await.unwrap(),
        CallPlaced::Joined { epoch, members: 2, created: false, .. } if epoch == e
    ));
    // A down owner: the choice takes the room, empty, with a larger epoch.
    s.set_node_health(&node("a"), false).await.unwrap();
    s.register_node(&reg("a", "00:00:00:00:00:a"))
        .await
        .unwrap();
    let placed = s
        .place_call(&arrival(&room, "b", "c3", None), &node("b"))
        .await
        .unwrap();
    let CallPlaced::Joined {
        epoch: e2,
        members: 1,
        created: true,
        already: false,
        ..
    } = placed
    else {
        panic!("{placed:?}")
    };
    assert!(e2 > e);
    let d = s.get_room(&room).await.unwrap().unwrap();
    assert_eq!(d.placement.node, node("b"));
    assert_eq!(
        d.members
            .iter()
            .map(|m| m.channel.clone())
            .collect::<Vec<_>>(),
        [chan("c3")]
    );
}

/// The suspect rule of `resolve_placement` holds inside `place_call`: a
/// suspect node (a failed health check) is refused as the choice for a new
/// room and nothing is written, while the rooms it has keep their calls
/// (an arrival there joins, a token for it joins, a call landing elsewhere
/// gets a token for it); cleared, it is eligible again.
async fn place_call_refuses_a_suspect_choice_but_its_rooms_stay(s: Arc<dyn Store>) {
    nodes(&s, &["a", "b"]).await;
    let (kept, new) = (conf("kept"), conf("new"));
    let (_, e, _, _) = owner(s.resolve_placement(&kept, &node("a")).await.unwrap());
    s.set_node_suspect(&node("a"), true).await.unwrap();
    let t = TokenId::generate(&mut rand::rng());
    assert_eq!(
        s.place_call(&arrival(&new, "a", "n1", Some(&t)), &node("a"))
            .await
            .unwrap(),
        CallPlaced::ChoiceIneligible { node: node("a") }
    );
    assert!(s.get_room(&new).await.unwrap().is_none());
    assert_eq!(s.peek_token(&t).await.unwrap(), None);
    // Its room stays, with its joiners: landing there, or by token.
    assert_eq!(
        s.place_call(&arrival(&kept, "a", "k1", None), &node("b"))
            .await
            .unwrap(),
        CallPlaced::Joined {
            epoch: e,
            members: 1,
            created: false,
            previous: None,
            already: false
        }
    );
    let placed = s
        .place_call(&arrival(&kept, "b", "k2", Some(&t)), &node("b"))
        .await
        .unwrap();
    assert!(
        matches!(&placed, CallPlaced::Elsewhere { owner, epoch, created: false, token: Some(_), .. }
            if *owner == node("a") && *epoch == e),
        "{placed:?}"
    );
    assert!(matches!(
        s.join_with_token(&t, &node("a"), &chan("k2"))
            .await
            .unwrap(),
        TokenJoin::Joined {
            member: MemberAdded::Added {
                members: 2,
                claimed: false,
                ..
            },
            ..
        }
    ));
    // Cleared: eligible again.
    s.set_node_suspect(&node("a"), false).await.unwrap();
    assert!(matches!(
        s.place_call(&arrival(&new, "a", "n1", None), &node("a"))
            .await
            .unwrap(),
        CallPlaced::Joined { created: true, .. }
    ));
}

/// A token arriving on its node is consumed and its call recorded in the
/// token's room in one step, with the role its grant implies; after, the
/// token is its channel's alone (a retry by it joins again, harmlessly);
/// wrong node, expired and unknown tokens record nothing.
async fn join_with_token_consumes_once_and_records_the_member(s: Arc<dyn Store>) {
    nodes(&s, &["a", "b"]).await;
    let room = conf("tok");
    let (_, e, _, _) = owner(s.resolve_placement(&room, &node("b")).await.unwrap());
    let t = TokenId::generate(&mut rand::rng());
    s.mint_token(&t, &grant(&room, "a", "b"), Duration::from_secs(30))
        .await
        .unwrap();
    assert!(matches!(
        s.join_with_token(&t, &node("a"), &chan("y1"))
            .await
            .unwrap(),
        TokenJoin::NotConsumed(Consumed::WrongNode(_))
    ));
    assert_eq!(
        s.get_room(&room).await.unwrap().unwrap().placement.members,
        0
    );
    let joined = s
        .join_with_token(&t, &node("b"), &chan("y1"))
        .await
        .unwrap();
    let TokenJoin::Joined { record, member } = joined else {
        panic!("{joined:?}")
    };
    assert_eq!(record.grant, grant(&room, "a", "b"));
    assert_eq!(
        member,
        MemberAdded::Added {
            epoch: e,
            members: 1,
            claimed: false
        }
    );
    let d = s.get_room(&room).await.unwrap().unwrap();
    assert_eq!(d.members.len(), 1);
    assert_eq!(
        (d.members[0].channel.clone(), d.members[0].role),
        (chan("y1"), Role::Participant)
    );
    // The token is the consuming channel's: its retry (after a timeout
    // that may have consumed it) gets it again and finds itself a member
    // already; any other channel, or the same one on another node, finds
    // nothing, and nobody can peek at it or consume it plainly.
    assert_eq!(
        s.join_with_token(&t, &node("b"), &chan("y1"))
            .await
            .unwrap(),
        TokenJoin::Joined {
            record: record.clone(),
            member: MemberAdded::AlreadyMember {
                epoch: e,
                members: 1
            }
        }
    );
    for (n, c) in [("b", "y2"), ("a", "y1")] {
        assert_eq!(
            s.join_with_token(&t, &node(n), &chan(c)).await.unwrap(),
            TokenJoin::NotConsumed(Consumed::Unknown),
            "{n}/{c}"
        );
    }
    assert_eq!(
        s.consume_token(&t, &node("b")).await.unwrap(),
        Consumed::Unknown
    );
    assert_eq!(
        s.consume_token_as(&t, &node("b"), &chan("y1"))
            .await
            .unwrap(),
        Consumed::Ok(record.clone()),
        "the same consumer, through consume_token_as"
    );
    assert_eq!(s.peek_token(&t).await.unwrap(), None);
    assert_eq!(
        s.get_room(&room).await.unwrap().unwrap().placement.members,
        1
    );
    // Queue tokens: an agent's grant records an agent, else a caller.
    let q = RoomKey::parse("queue", "tq").unwrap();
    s.resolve_placement(&q, &node("b")).await.unwrap();
    let mut g = grant(&q, "a", "b");
    let (ta, tc) = (
        TokenId::generate(&mut rand::rng()),
        TokenId::generate(&mut rand::rng()),
    );
    s.mint_token(&tc, &g, Duration::from_secs(30))
        .await
        .unwrap();
    g.agent = Some(corral::domain::AgentId::new("ann").unwrap());
    s.mint_token(&ta, &g, Duration::from_secs(30))
        .await
        .unwrap();
    s.join_with_token(&tc, &node("b"), &chan("qc"))
        .await
        .unwrap();
    s.join_with_token(&ta, &node("b"), &chan("qa"))
        .await
        .unwrap();
    let roles: Vec<_> = s
        .get_room(&q)
        .await
        .unwrap()
        .unwrap()
        .members
        .into_iter()
        .map(|m| (m.channel, m.role))
        .collect();
    assert_eq!(
        roles,
        [(chan("qa"), Role::Agent), (chan("qc"), Role::Caller)]
    );
    // Expired: not consumed, nothing recorded.
    let tx = TokenId::generate(&mut rand::rng());
    s.mint_token(&tx, &grant(&room, "a", "b"), Duration::from_millis(100))
        .await
        .unwrap();
    eventually(WAIT, "the token expires", || {
        let s = s.clone();
        let tx = tx.clone();
        async move {
            match s.peek_token(&tx).await.unwrap() {
                Some(r)
                    if s.consume_token(&tx, &node("zz"))
                        .await
                        .is_ok_and(|c| matches!(c, Consumed::Expired(_))) =>
                {
                    Some(r)
                }
                _ => None,
            }
        }
    })
    .await;
    assert!(matches!(
        s.join_with_token(&tx, &node("b"), &chan("late"))
            .await
            .unwrap(),
        TokenJoin::NotConsumed(Consumed::Expired(_))
    ));
    assert_eq!(
        s.get_room(&room).await.unwrap().unwrap().placement.members,
        1
    );
}

/// `add_member`'s rules hold inside `join_with_token`: a room that lives
/// elsewhere now answers `Moved` (the token is used up all the same); an
/// unplaced room is claimed by the node; a down node records nothing.
async fn join_with_token_follows_the_member_rules(s: Arc<dyn Store>) {
    nodes(&s, &["a", "b", "c"]).await;
    let moved = conf("moved");
    let (_, e, _, _) = owner(s.resolve_placement(&moved, &node("c")).await.unwrap());
    let t = TokenId::generate(&mut rand::rng());
    s.mint_token(&t, &grant(&moved, "a", "b"), Duration::from_secs(30))
        .await
        .unwrap();
    let r = s
        .join_with_token(&t, &node("b"), &chan("m1"))
        .await
        .unwrap();
    assert!(
        matches!(&r, TokenJoin::Joined { member: MemberAdded::Moved { owner, epoch }, .. } if *owner == node("c") && *epoch == e),
        "{r:?}"
    );
    assert_eq!(s.peek_token(&t).await.unwrap(), None);
    // Released meanwhile: claimed by the node the token arrived on.
    let gone = conf("gone");
    let t = TokenId::generate(&mut rand::rng());
    s.mint_token(&t, &grant(&gone, "a", "b"), Duration::from_secs(30))
        .await
        .unwrap();
    let r = s
        .join_with_token(&t, &node("b"), &chan("g1"))
        .await
        .unwrap();
    assert!(
        matches!(
            &r,
            TokenJoin::Joined {
                member: MemberAdded::Added {
                    members: 1,
                    claimed: true,
                    ..
                },
                ..
            }
        ),
        "{r:?}"
    );
    assert_eq!(
        s.get_room(&gone).await.unwrap().unwrap().placement.node,
        node("b")
    );
    // A down node: consumed, nothing recorded.
    let lost = conf("lost");
    let t = TokenId::generate(&mut rand::rng());
    s.mint_token(&t, &grant(&lost, "a", "b"), Duration::from_secs(30))
        .await
        .unwrap();
    s.set_node_health(&node("b"), false).await.unwrap();
    let r = s
        .join_with_token(&t, &node("b"), &chan("l1"))
        .await
        .unwrap();
    assert!(matches!(r, TokenJoin::NodeUnavailable { .. }), "{r:?}");
    assert!(s.get_room(&lost).await.unwrap().is_none());
    assert_eq!(s.peek_token(&t).await.unwrap(), None);
}

/// Calls racing into a new room from every node: one owner, every call
/// that landed there recorded, every other one holding a token for it.
async fn race_many_placed_calls_one_owner_every_member_there(s: Arc<dyn Store>) {
    nodes(&s, &["a", "b", "c"]).await;
    let room = conf("rush");
    let tasks: Vec<_> = (0..60)
        .map(|i| {
            let s = s.clone();
            let room = room.clone();
            tokio::spawn(async move {
                let landing = ["a", "b", "c"][i % 3];
                let t = TokenId::generate(&mut rand::rng());
                let a = arrival(&room, landing, &format!("k{i}"), Some(&t));
                (landing, s.place_call(&a, &node(landing)).await.unwrap())
            })
        })
        .collect();
    let mut owners = std::collections::HashSet::new();
    let mut joined = 0;
    for task in tasks {
        match task.await.unwrap() {
            (landing, CallPlaced::Joined { .. }) => {
                owners.insert(node(landing));
                joined += 1;
            }
            (
                _,
                CallPlaced::Elsewhere {
                    owner,
                    token: Some(r),
                    ..
                },
            ) => {
                assert_eq!(r.grant.to, owner);
                owners.insert(owner);
            }
            (_, other) => panic!("{other:?}"),
        }
    }
    assert_eq!(owners.len(), 1, "{owners:?}");
    let d = s.get_room(&room).await.unwrap().unwrap();
    assert!(owners.contains(&d.placement.node));
    assert_eq!(d.members.len(), joined);
    assert_eq!(joined, 20);
}

/// Two arrivals of one token: one consumes it and is recorded, the other
/// finds nothing and records nothing.
async fn race_two_token_joins_one_winner(s: Arc<dyn Store>) {
    nodes(&s, &["a", "b"]).await;
    let room = conf("twice");
    s.resolve_placement(&room, &node("b")).await.unwrap();
    for i in 0..20 {
        let t = TokenId::generate(&mut rand::rng());
        s.mint_token(&t, &grant(&room, "a", "b"), Duration::from_secs(30))
            .await
            .unwrap();
        let tasks: Vec<_> = (0..2)
            .map(|k| {
                let s = s.clone();
                let t = t.clone();
                tokio::spawn(async move {
                    s.join_with_token(&t, &node("b"), &chan(&format!("w{i}-{k}")))
                        .await
                })
            })
            .collect();
        let mut wins = 0;
        for task in tasks {
            match task.await.unwrap().unwrap() {
                TokenJoin::Joined { .. } => wins += 1,
                TokenJoin::NotConsumed(Consumed::Unknown) => {}
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(wins, 1);
    }
    assert_eq!(s.get_room(&room).await.unwrap().unwrap().members.len(), 20);
}

/// The queue engine's save on a node is the compare-and-set of
/// `save_queue_parts` plus an owner check in the same step: written only
/// while that node owns the queue's room and is up; else nothing changes
/// and the answer names the owner now.
async fn queue_saves_on_a_node_check_it_owns_the_queue(s: Arc<dyn Store>) {
    nodes(&s, &["a", "b"]).await;
    let q = qname("line");
    let room = RoomKey::new(RoomKind::Queue, q.clone());
    let add = [(1u64, "{\"c\":1}".to_owned())];
    assert_eq!(
        s.save_queue_on(&q, &node("a"), 0, "{}", &[], &add)
            .await
            .unwrap(),
        QueueSave::Moved(None),
        "an unplaced queue"
    );
    s.resolve_placement(&room, &node("a")).await.unwrap();
    assert_eq!(
        s.save_queue_on(&q, &node("b"), 0, "{}", &[], &add)
            .await
            .unwrap(),
        QueueSave::Moved(Some(node("a")))
    );
    assert_eq!(s.load_queue(&q).await.unwrap(), None);
    assert_eq!(
        s.save_queue_on(&q, &node("a"), 0, "{\"v\":1}", &[], &add)
            .await
            .unwrap(),
        QueueSave::Saved(1)
    );
    assert_eq!(
        s.save_queue_on(&q, &node("a"), 0, "{\"v\":2}", &[], &[])
            .await
            .unwrap(),
        QueueSave::Conflict
    );
    assert_eq!(
        s.save_queue_on(&q, &node("a"), 1, "{\"v\":2}", &[1], &[])
            .await
            .unwrap(),
        QueueSave::Saved(2)
    );
    let d = s.load_queue(&q).await.unwrap().unwrap();
    assert_eq!(
        (d.version, d.doc.as_str(), d.callers.len()),
        (2, "{\"v\":2}", 0)
    );
    // The owner down: nothing is saved.
    s.set_node_health(&node("a"), false).await.unwrap();
    assert!(matches!(
        s.save_queue_on(&q, &node("a"), 2, "{\"v\":3}", &[], &[])
            .await
            .unwrap(),
        QueueSave::Moved(_)
    ));
    assert_eq!(s.queue_version(&q).await.unwrap(), 2);
}

// ---- a replica's copy of the healthy nodes (Redis) -------------------------

/// `EVALSHA` calls Redis has run so far.
async fn evalsha_calls(s: &store::RedisStore) -> u64 {
    let info = match s
        .raw(::redis::cmd("INFO").arg("commandstats").clone())
        .await
    {
        Ok(::redis::Value::BulkString(b)) => String::from_utf8(b).expect("utf-8"),
        Ok(::redis::Value::VerbatimString { text, .. }) => text,
        other => panic!("INFO answered {other:?}"),
    };
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|l| l.split(',').next())
        .map_or(0, |n| n.parse().expect("a count"))
}

/// `set_node_health.lua` itself, run directly: the node's health and
/// generation change (and the health version with them) but its rooms are
/// not released yet, the window `Store::set_node_health` closes with its
/// release batches.
async fn mark_down_without_release(s: &store::RedisStore, id: &str) {
    let mut cmd = ::redis::cmd("EVAL");
    cmd.arg(include_str!("../lua/set_node_health.lua"))
        .arg(3)
        .arg(s.keys().node(&node(id)))
        .arg(s.keys().health_version())
        .arg(s.keys().epoch())
        .arg("0");
    s.raw(cmd).await.expect("set_node_health.lua");
}

/// A placed room is decided from the replica's copy of the healthy nodes,
/// without a script; any change of a node's health or generation, made by
/// another replica, is seen at the next decision (the health version
/// changed), even while the node's rooms are not released yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_placed_rooms_are_decided_from_the_copy_and_see_other_replicas_changes() {
    let redis = RedisProcess::start();
    let cfg = redis_config("view", &redis.url());
    let a = store::RedisStore::connect(&cfg).await.expect("replica a");
    let b = store::RedisStore::connect(&cfg).await.expect("replica b");
    for id in ["n1", "n2"] {
        b.register_node(&reg(id, &format!("aid-{id}")))
            .await
            .unwrap();
    }
    let room = conf("r");
    let (_, e1, created, _) = owner(a.resolve_placement(&room, &node("n1")).await.unwrap());
    assert!(created);
    let before = evalsha_calls(&a).await;
    for _ in 0..5 {
        assert_eq!(
            owner(a.resolve_placement(&room, &node("n2")).await.unwrap()),
            (node("n1"), e1, false, None)
        );
    }
    let scripts = evalsha_calls(&a).await - before;
    assert!(
        scripts <= 1,
        "5 decisions on a placed room ran {scripts} scripts (at most the copy's one read)"
    );

    // Another replica marks the owner down; its rooms are still there.
    mark_down_without_release(&b, "n1").await;
    assert!(
        b.get_room(&room).await.unwrap().is_some(),
        "not released yet"
    );
    let (n, e2, created, previous) = owner(a.resolve_placement(&room, &node("n2")).await.unwrap());
    assert_eq!((n, created, previous), (node("n2"), true, Some(node("n1"))));
    assert!(e2 > e1);

    // n1 healthy again: the room stays on n2, decided from the copy again.
    b.set_node_health(&node("n1"), true).await.unwrap();
    assert_eq!(
        owner(a.resolve_placement(&room, &node("n1")).await.unwrap()),
        (node("n2"), e2, false, None)
    );
    // A new incarnation of n2, registered through b: its rooms are stale for
    // a at once.
    let r = b
        .register_node(&reg("n2", "aid-n2-restarted"))
        .await
        .unwrap();
    assert!(r.new_incarnation);
    let (n, _, created, _) = owner(a.resolve_placement(&room, &node("n1")).await.unwrap());
    assert_eq!((n, created), (node("n1"), true));
}

/// A change the health version does not show (a replica of an older
/// release, whose scripts do not change it) is seen within the copy's
/// longest life, one second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_change_without_a_new_version_is_seen_within_a_second() {
    let redis = RedisProcess::start();
    let cfg = redis_config("view-age", &redis.url());
    let a = store::RedisStore::connect(&cfg).await.expect("replica a");
    for id in ["n1", "n2"] {
        a.register_node(&reg(id, &format!("aid-{id}")))
            .await
            .unwrap();
    }
    let room = conf("r");
    owner(a.resolve_placement(&room, &node("n1")).await.unwrap());
    assert_eq!(
        owner(a.resolve_placement(&room, &node("n2")).await.unwrap()).0,
        node("n1")
    );
    let mut cmd = ::redis::cmd("HSET");
    cmd.arg(a.keys().node(&node("n1"))).arg("h").arg("0");
    a.raw(cmd).await.unwrap();
    let started = std::time::Instant::now();
    eventually(WAIT, "the room placed again on n2", || async {
        let (n, ..) = owner(a.resolve_placement(&room, &node("n2")).await.unwrap());
        (n == node("n2")).then_some(())
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "seen after {:?}",
        started.elapsed()
    );
}
