//! Flow events: ring buffer to named flows to JSON lines on a Unix socket.
//!
//! Protocol: a client connects to the socket, sends one line with a JSON
//! [`crate::flows::FlowFilter`] (`{}` for everything), then reads one JSON
//! [`crate::flows::Flow`] per line until it disconnects.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use aya::maps::{Map, RingBuf};
use std::os::fd::AsFd as _;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::sync::broadcast;

use super::Names;
use crate::abi::FlowEvent;
use crate::flows::{Flow, FlowFilter};

/// Reads the ring buffer on its own thread (poll(2) on the map's fd) and
/// publishes named flows. The datapath limits events per flow, so a flood
/// of one flow cannot starve this reader.
pub fn pump(map: Map, names: Arc<RwLock<Names>>, tx: broadcast::Sender<Arc<Flow>>) {
    let mut ring = match RingBuf::try_from(map) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "plinth_events is not a ring buffer; no flow events");
            return;
        }
    };
    std::thread::spawn(move || {
        loop {
            {
                let mut fds = [PollFd::new(ring.as_fd(), PollFlags::POLLIN)];
                if let Err(e) = poll(&mut fds, PollTimeout::from(200u16))
                    && e != nix::errno::Errno::EINTR
                {
                    tracing::error!(error = %e, "polling plinth_events failed; no more flow events");
                    return;
                }
            }
            while let Some(item) = ring.next() {
                if let Some(e) = FlowEvent::from_bytes(&item) {
                    let flow = names.read().map(|n| n.flow(&e)).ok();
                    if let Some(f) = flow {
                        let _ = tx.send(Arc::new(f));
                    }
                }
            }
        }
    });
}

/// Serves flows on a Unix socket.
pub async fn serve(path: PathBuf, tx: broadcast::Sender<Arc<Flow>>) {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = std::fs::remove_file(&path);
    let listener = match tokio::net::UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, socket = %path.display(), "cannot serve flows");
            return;
        }
    };
    tracing::info!(socket = %path.display(), "serving flows");
    while let Ok((stream, _)) = listener.accept().await {
        let mut rx = tx.subscribe();
        tokio::spawn(async move {
            let (r, mut w) = stream.into_split();
            let mut line = String::new();
            if BufReader::new(r).read_line(&mut line).await.is_err() {
                return;
            }
            let filter: FlowFilter = serde_json::from_str(line.trim()).unwrap_or_default();
            loop {
                match rx.recv().await {
                    Ok(f) if filter.matches(&f) => {
                        let Ok(mut json) = serde_json::to_string(&*f) else {
                            continue;
                        };
                        json.push('\n');
                        if w.write_all(json.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(skipped = n, "flows client too slow");
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }
}
