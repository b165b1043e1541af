//! The demo's Asterisk: an AMI server on loopback that answers what the
//! agent's AMI reader sends (`Login`, `Ping`, `Logoff`) and forwards the
//! feed's messages to whoever is logged in.
//!
//! The feed (the recording, the synthetic call centre) writes into a
//! channel; the server drains it into the current connection. If the agent
//! reconnects, the next session goes on where the last one stopped, so a
//! reconnect loses nothing (a real Asterisk would drop what it sent in
//! between). The feed is told when the first login succeeded, so that the
//! replay starts when somebody listens.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use callkpi_feeds::Status;
use callkpi_feeds::ami::{parse_message, skip_message};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

/// What the banner says: the recording's AMI version.
const BANNER: &[u8] = b"Asterisk Call Manager/11.0.0\r\n";

/// Longest wait for the client's `Login`.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);

/// An action received from the client.
#[derive(Debug)]
struct Action {
    name: String,
    id: String,
}

/// Serves connections one after the other until `stop`.
pub(crate) async fn serve(
    listener: TcpListener,
    mut feed: mpsc::Receiver<Vec<u8>>,
    logged_in: Arc<Notify>,
    stop: CancellationToken,
) {
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::debug!(error = %e, "Demo PBX: accept failed.");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = stop.cancelled() => return,
        };
        if let Err(e) = session(stream, &mut feed, &logged_in, &stop).await {
            tracing::debug!(error = %e, "Demo PBX: session ended.");
        }
    }
}

async fn session(
    stream: TcpStream,
    feed: &mut mpsc::Receiver<Vec<u8>>,
    logged_in: &Notify,
    stop: &CancellationToken,
) -> io::Result<()> {
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    wr.write_all(BANNER).await?;
    let mut buf = Vec::new();
    let login = tokio::select! {
        r = tokio::time::timeout(LOGIN_TIMEOUT, next_action(&mut rd, &mut buf)) => {
            r.map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no Login"))??
        }
        () = stop.cancelled() => return Ok(()),
    };
    let Some(login) = login.filter(|a| a.name.eq_ignore_ascii_case("Login")) else {
        wr.write_all(b"Response: Error\r\nMessage: Authentication required\r\n\r\n").await?;
        return Ok(());
    };
    // Any user and secret: the port is on loopback and lives as long as the demo.
    wr.write_all(
        format!("Response: Success\r\nActionID: {}\r\nMessage: Authentication accepted\r\n\r\n", login.id).as_bytes(),
    )
    .await?;
    logged_in.notify_one();
    let mut feed_open = true;
    loop {
        tokio::select! {
            chunk = feed.recv(), if feed_open => match chunk {
                Some(bytes) => wr.write_all(&bytes).await?,
                None => feed_open = false,
            },
            action = next_action(&mut rd, &mut buf) => {
                let Some(action) = action? else { return Ok(()) };
                let reply = match action.name.to_ascii_lowercase().as_str() {
                    "ping" => format!("Response: Success\r\nActionID: {}\r\nPing: Pong\r\nTimestamp: {}\r\n\r\n",
                        action.id, super::now_ns() as f64 / 1e9),
                    "logoff" => {
                        let bye = format!("Response: Goodbye\r\nActionID: {}\r\nMessage: Thanks for all the fish.\r\n\r\n", action.id);
                        wr.write_all(bye.as_bytes()).await?;
                        return Ok(());
                    }
                    _ => format!("Response: Error\r\nActionID: {}\r\nMessage: Not supported by the demo PBX\r\n\r\n", action.id),
                };
                wr.write_all(reply.as_bytes()).await?;
            }
            () = stop.cancelled() => return Ok(()),
        }
    }
}

/// The next action from the client; `None` when it closed the connection.
///
/// # Cancel safety
/// Cancel safe: bytes read are kept in `buf` until a whole action is there.
async fn next_action(rd: &mut OwnedReadHalf, buf: &mut Vec<u8>) -> io::Result<Option<Action>> {
    loop {
        match parse_message(buf) {
            Ok(Status::Complete { value, consumed }) => {
                let action = value.get("Action").map(|a| Action {
                    name: a.into_owned(),
                    id: value.action_id().map(|i| i.into_owned()).unwrap_or_default(),
                });
                buf.drain(..consumed);
                if let Some(action) = action {
                    return Ok(Some(action));
                }
            }
            Ok(Status::Partial) => {
                let mut chunk = [0; 4096];
                let n = rd.read(&mut chunk).await?;
                if n == 0 {
                    return Ok(None);
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            Err(_) => match skip_message(buf) {
                Status::Complete { consumed, .. } => {
                    buf.drain(..consumed);
                }
                Status::Partial => buf.clear(),
            },
        }
    }
}
