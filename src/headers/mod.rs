//! Header grammar the HTTP layers share: entity tags and their lists (the cache layer judges
//! preconditions with them, the compression layer derives a tag per encoding) and `Vary`
//! merging. Parsing only, no layer's policy: nothing here panics on any bytes.

// Compiled with either layer; with one of them alone, the other's parts have no caller.
#![cfg_attr(not(all(feature = "cache", feature = "compression")), allow(dead_code))]

pub(crate) mod etag;
pub(crate) mod vary;
