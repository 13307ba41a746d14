//! `corral rooms` and `corral room KIND NAME`: the room map.

use serde_json::Value;

use super::enc;
use super::{Client, Conn};
use crate::api::rooms::{RoomDetailView, RoomList, RoomRow};
use crate::cli::output;

/// `corral rooms`.
#[derive(Debug, clap::Args)]
pub struct RoomsArgs {
    /// API connection.
    #[command(flatten)]
    pub conn: Conn,
    /// Only rooms on this node.
    #[arg(long)]
    pub node: Option<String>,
    /// Only rooms of this kind (`conference`, `queue`).
    #[arg(long)]
    pub kind: Option<String>,
}

/// `corral room KIND NAME`.
#[derive(Debug, clap::Args)]
pub struct RoomArgs {
    /// API connection.
    #[command(flatten)]
    pub conn: Conn,
    /// `conference` or `queue`.
    pub kind: String,
    /// The room's name.
    pub name: String,
}

fn room_rows(rooms: &[RoomRow]) -> Vec<Vec<String>> {
    rooms
        .iter()
        .map(|r| {
            vec![
                r.node.clone(),
                r.kind.clone(),
                r.name.clone(),
                r.members.to_string(),
                r.epoch.to_string(),
            ]
        })
        .collect()
}

/// `corral rooms`: every page of the room map.
pub async fn rooms(args: RoomsArgs) -> anyhow::Result<()> {
    let c = Client::new(&args.conn)?;
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut q = vec![format!("limit={}", crate::api::rooms::MAX_PAGE)];
        if let Some(n) = &args.node {
            q.push(format!("node={}", enc(n)));
        }
        if let Some(k) = &args.kind {
            q.push(format!("kind={}", enc(k)));
        }
        if let Some(cur) = &cursor {
            q.push(format!("cursor={}", enc(cur)));
        }
        let page: RoomList = c.get(&format!("/v1/rooms?{}", q.join("&"))).await?;
        all.extend(page.rooms);
        match page.next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    if args.conn.json {
        print!("{}", output::json(&serde_json::json!({ "rooms": all })));
    } else {
        print!(
            "{}",
            output::table(
                &["NODE", "KIND", "NAME", "MEMBERS", "EPOCH"],
                &room_rows(&all)
            )
        );
        println!(
            "{} rooms, {} members",
            all.len(),
            all.iter().map(|r| u64::from(r.members)).sum::<u64>()
        );
    }
    Ok(())
}

/// `corral room KIND NAME`: one room and its members.
pub async fn room(args: RoomArgs) -> anyhow::Result<()> {
    let c = Client::new(&args.conn)?;
    let path = format!("/v1/rooms/{}/{}", enc(&args.kind), enc(&args.name));
    if args.conn.json {
        let v: Value = c.get(&path).await?;
        print!("{}", output::json(&v));
        return Ok(());
    }
    let r: RoomDetailView = c.get(&path).await?;
    println!(
        "{} {} on {} (epoch {}), {} members",
        r.room.kind, r.room.name, r.room.node, r.room.epoch, r.room.members
    );
    let rows: Vec<Vec<String>> = r
        .member_list
        .iter()
        .map(|m| vec![m.node.clone(), m.channel.clone(), m.role.clone()])
        .collect();
    print!("{}", output::table(&["NODE", "CHANNEL", "ROLE"], &rows));
    Ok(())
}
