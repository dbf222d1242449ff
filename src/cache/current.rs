//! What a `current_etag` function says of the resource before its handler runs.

use super::EntityTag;

/// The resource's current validator, as a [`current_etag`] function knows it before the
/// handler runs.
///
/// ```
/// use tower_bulwark::cache::{CurrentEtag, EntityTag};
///
/// let known: CurrentEtag = EntityTag::strong("v3").unwrap().into();
/// let gone: CurrentEtag = None.into(); // `Option<EntityTag>`: `None` is `Missing`
/// assert!(matches!(known, CurrentEtag::Is(_)));
/// assert_eq!(gone, CurrentEtag::Missing);
/// ```
///
/// [`current_etag`]: super::CacheLayerBuilder::current_etag
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CurrentEtag {
    /// The resource has this ETag now.
    Is(EntityTag),
    /// The resource does not exist: `If-Match` fails, `If-None-Match: *` holds.
    Missing,
    /// Not known here (another route, say): the handler's response decides.
    Unknown,
}
