//! The codecs, as their crates give them: flate2 (gzip, deflate), zstd, brotli. Each turns
//! the body's chunks into compressed bytes appended to a buffer, flushes on demand (so a
//! streamed body that pauses is readable so far) and finishes the stream. DEFLATE and zstd
//! state comes from the thread's pool ([`super::pool`]); brotli has no reset, so its state is
//! made per response.

use std::cell::RefCell;
use std::io;
use std::thread::LocalKey;

use flate2::{Compress, Compression, FlushCompress, Status};

use super::negotiate::Encoding;
use super::pool::{Idle, Pooled, Reusable};

/// Room made in the output buffer before each step: most compressed API bodies fit in one.
const OUTPUT_STEP: usize = 4 * 1024;

/// The levels a layer compresses at, validated by the builder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Levels {
    /// gzip and deflate: 0 to 9.
    pub(crate) deflate: u32,
    /// brotli's quality: 0 to 11.
    #[cfg_attr(not(feature = "compression-br"), allow(dead_code))]
    pub(crate) brotli: u32,
    /// zstd: 1 to 22.
    #[cfg_attr(not(feature = "compression-zstd"), allow(dead_code))]
    pub(crate) zstd: i32,
}

/// A compressor for one response.
pub(crate) enum Encoder {
    Deflate(Pooled<Compress>),
    #[cfg(feature = "compression-zstd")]
    Zstd(Pooled<zstd::stream::raw::Encoder<'static>>),
    // Boxed: brotli's writer is large and this enum lives in every compressed body.
    #[cfg(feature = "compression-br")]
    Brotli(Box<Option<brotli::CompressorWriter<Vec<u8>>>>),
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Encoder::Deflate(_) => "Encoder::Deflate",
            #[cfg(feature = "compression-zstd")]
            Encoder::Zstd(_) => "Encoder::Zstd",
            #[cfg(feature = "compression-br")]
            Encoder::Brotli(_) => "Encoder::Brotli",
        })
    }
}

/// gzip (RFC 1952) or zlib (RFC 1950, HTTP's `deflate`) framing around DEFLATE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    Gzip,
    Zlib,
}

thread_local! {
    static IDLE_DEFLATE: RefCell<Vec<((u32, Framing), Compress)>> = const { RefCell::new(Vec::new()) };
}

impl Reusable for Compress {
    type Setting = (u32, Framing);

    fn idle() -> &'static LocalKey<Idle<Self>> {
        &IDLE_DEFLATE
    }

    fn make((level, framing): Self::Setting) -> Option<Self> {
        let level = Compression::new(level);
        Some(match framing {
            // 15: the largest window (32 KiB), zlib's default; the header is written by
            // zlib-rs (fixed: no name, no time stamp), as is the CRC-32 trailer.
            Framing::Gzip => Compress::new_gzip(level, 15),
            Framing::Zlib => Compress::new(level, true),
        })
    }

    fn reset(&mut self) -> bool {
        Compress::reset(self);
        true
    }
}

#[cfg(feature = "compression-zstd")]
thread_local! {
    static IDLE_ZSTD: RefCell<Vec<(i32, zstd::stream::raw::Encoder<'static>)>> = const { RefCell::new(Vec::new()) };
}

#[cfg(feature = "compression-zstd")]
impl Reusable for zstd::stream::raw::Encoder<'static> {
    type Setting = i32;

    fn idle() -> &'static LocalKey<Idle<Self>> {
        &IDLE_ZSTD
    }

    fn make(level: i32) -> Option<Self> {
        zstd::stream::raw::Encoder::new(level).ok()
    }

    fn reset(&mut self) -> bool {
        use zstd::stream::raw::Operation;
        // A new frame with the same parameters (ZSTD_reset_session_only).
        self.reinit().is_ok()
    }
}

/// How far a step should go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Take the input; output what the codec is ready to give.
    Write,
    /// And everything taken so far, readable by the client now.
    Flush,
    /// And end the stream (its trailer).
    Finish,
}

impl Encoder {
    /// A compressor for `encoding` at `levels`; `None` for `Identity` or if the codec could
    /// not make one (the body then goes as it is).
    pub(crate) fn new(encoding: Encoding, levels: Levels) -> Option<Self> {
        match encoding {
            Encoding::Identity => None,
            Encoding::Gzip => Pooled::take((levels.deflate, Framing::Gzip)).map(Self::Deflate),
            Encoding::Deflate => Pooled::take((levels.deflate, Framing::Zlib)).map(Self::Deflate),
            #[cfg(feature = "compression-zstd")]
            Encoding::Zstd => Pooled::take(levels.zstd).map(Self::Zstd),
            #[cfg(feature = "compression-br")]
            Encoding::Brotli => {
                // 22: brotli's default window (4 MiB; the ring buffer is sized to the input
                // actually seen, so a small body allocates little).
                let writer =
                    brotli::CompressorWriter::new(Vec::new(), OUTPUT_STEP, levels.brotli, 22);
                Some(Self::Brotli(Box::new(Some(writer))))
            }
        }
    }

    /// Compresses `input`, appending what the codec gives to `out`.
    pub(crate) fn write(&mut self, input: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        self.step(input, out, Step::Write)
    }

    /// Makes everything written so far readable (a sync flush), appending it to `out`.
    pub(crate) fn flush(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        self.step(&[], out, Step::Flush)
    }

    /// Ends the stream, appending the rest and the trailer to `out`.
    pub(crate) fn finish(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        self.step(&[], out, Step::Finish)
    }

    fn step(&mut self, input: &[u8], out: &mut Vec<u8>, step: Step) -> io::Result<()> {
        match self {
            Encoder::Deflate(pooled) => deflate(pooled.get().ok_or_else(gone)?, input, out, step),
            #[cfg(feature = "compression-zstd")]
            Encoder::Zstd(pooled) => zstd_step(pooled.get().ok_or_else(gone)?, input, out, step),
            #[cfg(feature = "compression-br")]
            Encoder::Brotli(writer) => brotli_step(writer, input, out, step),
        }
    }
}

fn gone() -> io::Error {
    io::Error::other("the compressor was already given back")
}

fn make_room(out: &mut Vec<u8>, input_len: usize) {
    if out.capacity() - out.len() < 64 {
        out.reserve(OUTPUT_STEP.max(input_len / 2));
    }
}

fn deflate(c: &mut Compress, mut input: &[u8], out: &mut Vec<u8>, step: Step) -> io::Result<()> {
    let flush = match step {
        Step::Write => FlushCompress::None,
        Step::Flush => FlushCompress::Sync,
        Step::Finish => FlushCompress::Finish,
    };
    loop {
        make_room(out, input.len());
        let (before_in, before_out) = (c.total_in(), c.total_out());
        let status = c
            .compress_vec(input, out, flush)
            .map_err(io::Error::other)?;
        let taken = usize::try_from(c.total_in() - before_in).unwrap_or(input.len());
        input = input.get(taken..).unwrap_or_default();
        let done = match step {
            Step::Write => input.is_empty(),
            // zlib's rule: a flush is complete when it left room in the output.
            Step::Flush => input.is_empty() && out.len() < out.capacity(),
            Step::Finish => status == Status::StreamEnd,
        };
        if done {
            return Ok(());
        }
        if taken == 0 && c.total_out() == before_out && out.len() < out.capacity() {
            // Room, input or a flush asked, and nothing moved: never spin.
            return Err(io::Error::other("the DEFLATE compressor made no progress"));
        }
    }
}

#[cfg(feature = "compression-zstd")]
fn zstd_step(
    e: &mut zstd::stream::raw::Encoder<'static>,
    input: &[u8],
    out: &mut Vec<u8>,
    step: Step,
) -> io::Result<()> {
    use zstd::stream::raw::{InBuffer, Operation, OutBuffer};
    let stuck = || io::Error::other("the zstd compressor made no progress");
    let mut source = InBuffer::around(input);
    while source.pos() < input.len() {
        make_room(out, input.len() - source.pos());
        let (taken, len) = (source.pos(), out.len());
        e.run(&mut source, &mut OutBuffer::around_pos(out, len))?;
        if source.pos() == taken && out.len() == len {
            return Err(stuck());
        }
    }
    if step == Step::Write {
        return Ok(());
    }
    // `flush` and `finish` return what is still buffered: call until nothing is.
    loop {
        make_room(out, 0);
        let len = out.len();
        let left = {
            let mut sink = OutBuffer::around_pos(out, len);
            match step {
                Step::Finish => e.finish(&mut sink, true)?,
                _ => e.flush(&mut sink)?,
            }
        };
        if left == 0 {
            return Ok(());
        }
        if out.len() == len {
            return Err(stuck());
        }
    }
}

#[cfg(feature = "compression-br")]
fn brotli_step(
    writer: &mut Option<brotli::CompressorWriter<Vec<u8>>>,
    input: &[u8],
    out: &mut Vec<u8>,
    step: Step,
) -> io::Result<()> {
    use std::io::Write;
    let Some(w) = writer.as_mut() else {
        return Err(gone());
    };
    w.write_all(input)?;
    match step {
        Step::Write => {}
        Step::Flush => w.flush()?,
        Step::Finish => {
            let finished = writer.take().ok_or_else(gone)?.into_inner();
            out.extend_from_slice(&finished);
            return Ok(());
        }
    }
    out.append(w.get_mut());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compression::pool::idle_count;
    use std::io::Read;

    const LEVELS: Levels = Levels {
        deflate: 6,
        brotli: 4,
        zstd: 3,
    };

    fn json(len: usize) -> Vec<u8> {
        let mut body = Vec::new();
        let mut i = 0;
        while body.len() < len {
            body.extend_from_slice(format!("{{\"id\":{i},\"name\":\"item {i}\"}},").as_bytes());
            i += 1;
        }
        body.truncate(len);
        body
    }

    fn encode(encoding: Encoding, chunks: &[&[u8]], flush_between: bool) -> Vec<u8> {
        let mut encoder = Encoder::new(encoding, LEVELS).unwrap();
        let mut out = Vec::new();
        for chunk in chunks {
            encoder.write(chunk, &mut out).unwrap();
            if flush_between {
                encoder.flush(&mut out).unwrap();
            }
        }
        encoder.finish(&mut out).unwrap();
        out
    }

    #[test]
    fn gzip_and_zlib_read_back_with_the_standard_decoders() {
        let body = json(50_000);
        let halves = [&body[..17_000], &body[17_000..]];
        for flush in [false, true] {
            let gz = encode(Encoding::Gzip, &halves, flush);
            assert_eq!(&gz[..3], &[0x1f, 0x8b, 8], "a gzip member header");
            let mut plain = Vec::new();
            flate2::read::GzDecoder::new(&gz[..])
                .read_to_end(&mut plain)
                .unwrap();
            assert_eq!(plain, body);
            let zlib = encode(Encoding::Deflate, &halves, flush);
            let mut plain = Vec::new();
            flate2::read::ZlibDecoder::new(&zlib[..])
                .read_to_end(&mut plain)
                .unwrap();
            assert_eq!(plain, body);
            assert!(zlib.len() < body.len() / 4);
        }
    }

    #[test]
    fn a_flush_makes_what_was_written_readable_before_the_end() {
        let mut encoder = Encoder::new(Encoding::Gzip, LEVELS).unwrap();
        let mut out = Vec::new();
        encoder.write(b"data: first event\n\n", &mut out).unwrap();
        encoder.flush(&mut out).unwrap();
        let mut decoder = flate2::write::GzDecoder::new(Vec::new());
        std::io::Write::write_all(&mut decoder, &out).unwrap();
        std::io::Write::flush(&mut decoder).unwrap();
        assert_eq!(decoder.get_ref().as_slice(), b"data: first event\n\n");
    }

    #[test]
    fn compressors_go_back_to_the_pool_reset_and_bounded() {
        let before = idle_count::<Compress>();
        let body = json(3000);
        let first = encode(Encoding::Gzip, &[&body], false);
        assert_eq!(idle_count::<Compress>(), before.max(1));
        // A compressor dropped mid-stream is reset: the next stream is whole and the same.
        let mut dirty = Encoder::new(Encoding::Gzip, LEVELS).unwrap();
        dirty.write(&body[..1000], &mut Vec::new()).unwrap();
        drop(dirty);
        assert_eq!(encode(Encoding::Gzip, &[&body], false), first);
        let many: Vec<_> = (0..10)
            .map(|_| Encoder::new(Encoding::Gzip, LEVELS).unwrap())
            .collect();
        drop(many);
        assert_eq!(idle_count::<Compress>(), crate::compression::pool::MAX_IDLE);
    }

    #[cfg(feature = "compression-zstd")]
    #[test]
    fn zstd_reads_back_and_reuses_its_context() {
        let body = json(40_000);
        for flush in [false, true] {
            let z = encode(Encoding::Zstd, &[&body[..9000], &body[9000..]], flush);
            assert_eq!(zstd::stream::decode_all(&z[..]).unwrap(), body);
        }
        assert!(idle_count::<zstd::stream::raw::Encoder<'static>>() >= 1);
    }

    #[cfg(feature = "compression-br")]
    #[test]
    fn brotli_reads_back() {
        let body = json(40_000);
        for flush in [false, true] {
            let br = encode(Encoding::Brotli, &[&body[..9000], &body[9000..]], flush);
            let mut plain = Vec::new();
            brotli::Decompressor::new(&br[..], 4096)
                .read_to_end(&mut plain)
                .unwrap();
            assert_eq!(plain, body);
        }
    }
}
