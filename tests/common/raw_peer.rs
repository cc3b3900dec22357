//! A raw gRPC peer: opens `OpenChannel` on a node and puts any bytes on the wire as frame bodies.

use prost::bytes::{Buf, BufMut};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Request, Status};

/// Sends and receives raw frame bodies.
#[derive(Clone, Copy, Default)]
pub struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(buf.copy_to_bytes(buf.remaining()).to_vec()))
    }
}

/// Opens a data-plane stream to `endpoint` (`http://host:port`): frames sent on the returned
/// sender go out as they are; what the node sends comes back raw on the stream.
pub async fn open(endpoint: &str) -> (mpsc::Sender<Vec<u8>>, Streaming<Vec<u8>>) {
    let channel = tonic::transport::Endpoint::from_shared(endpoint.to_string())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let (tx, rx) = mpsc::channel::<Vec<u8>>(64);
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/dataplane.proto.v1.DataPlaneService/OpenChannel");
    let inbound =
        grpc.streaming(Request::new(ReceiverStream::new(rx)), path, RawCodec).await.expect("open").into_inner();
    (tx, inbound)
}
