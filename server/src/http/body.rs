//! Request bodies read whole (SigV4 hashes them) under a size limit, and the
//! response body type: a whole buffer, or frames fed through a channel.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Limited};
use hyper::body::{Body, Frame};
use tokio::sync::mpsc;

use crate::bedrock::BedrockError;

/// Every response body the service produces.
pub type ResponseBody = BoxBody<Bytes, Infallible>;

/// Reads the whole body, refusing more than `limit` bytes.
pub async fn read_limited<B>(body: B, limit: usize) -> Result<Bytes, BedrockError>
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(BedrockError::validation(
            format!("The request body exceeds the limit of {limit} bytes."),
        )),
        Err(e) => Err(BedrockError::validation(format!(
            "The request body could not be read: {e}"
        ))),
    }
}

/// A streaming body: each message on the channel is one chunk, written as it
/// arrives. When the client goes away hyper drops this body, closing the channel,
/// which tells the producer to stop.
#[derive(Debug)]
pub struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
}

impl ChannelBody {
    /// A body and the sender that feeds it; at most `capacity` chunks wait unsent.
    pub fn channel(capacity: usize) -> (mpsc::Sender<Bytes>, Self) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (tx, Self { rx })
    }
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
    }
}
