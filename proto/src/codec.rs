//! The gRPC codec of every Mezzo service: prost's, with a smaller buffer.
//!
//! tonic gives each stream an encode and a decode buffer of 8 KiB by
//! default. A master holds one agent stream each way per agent, so that
//! was 16 KiB of a leader's memory per agent (of about 30 KiB) for
//! messages that are mostly heartbeats, updates and acknowledgements of a
//! few hundred bytes. A buffer grows to fit a larger message as it comes.

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// Each stream's encode and decode buffer to begin with.
const BUFFER: usize = 1024;
/// Bytes encoded before a streaming response yields (tonic's default).
const YIELD_THRESHOLD: usize = 32 * 1024;

/// [`ProstCodec`] with [`BUFFER`]-byte buffers (`proto/build.rs` names it
/// as every generated client's and server's codec).
#[derive(Debug, Clone)]
pub struct LeanCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for LeanCodec<T, U> {
    fn default() -> Self {
        LeanCodec(PhantomData)
    }
}

impl<T, U> Codec for LeanCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(BufferSettings::new(BUFFER, YIELD_THRESHOLD))
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(BufferSettings::new(BUFFER, YIELD_THRESHOLD))
    }
}
