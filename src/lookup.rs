//! The lookup rule of a merged directory, as a pure function of layer contents: walk the
//! parent's layers top-down; the first layer with the name wins; a whiteout there means absent;
//! a non-directory hides everything below; a directory merges with directories of the same name
//! below it until one is opaque or a non-directory or whiteout stops the merge.

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use crate::error::Result;
use crate::layer::LayerIdx;
use crate::sys::{self, Stat};
use crate::whiteout::Format;

#[derive(Debug)]
pub struct Found {
    /// Layers holding the object, top-down (one unless it is a merged directory).
    pub layers: Vec<LayerIdx>,
    /// The stat of the object in each of those layers.
    pub stats: Vec<Stat>,
    pub is_dir: bool,
    /// The directory's topmost copy is opaque.
    pub opaque: bool,
    /// Redirects met on the directory's copies and followed: its copies below each carrier
    /// are found there, not under its own name.
    pub redirect: Option<Redirects>,
}

/// The redirects of a merged directory's copies, top-down: the copy in layer `.0` carries one,
/// and the copies in the layers below it are at `.1` until the next carrier. `.1` is the
/// path in effect (see `LowerPath::then`), as kernel overlay's `ovl_lookup` carries it from
/// layer to layer. Never empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redirects(pub Vec<(LayerIdx, LowerPath)>);

impl Redirects {
    /// Where the copy in `layer` is: the path of the deepest carrier above it; None: under
    /// the directory's own name.
    pub fn for_layer(&self, layer: LayerIdx) -> Option<&LowerPath> {
        self.0
            .iter()
            .rev()
            .find(|(c, _)| *c < layer)
            .map(|(_, p)| p)
    }

    /// The redirect the copy in `layer` carries, if it carries one.
    pub fn carried_by(&self, layer: LayerIdx) -> Option<&LowerPath> {
        self.0.iter().find(|(c, _)| *c == layer).map(|(_, p)| p)
    }
}

/// Where a renamed directory's lower copies are: kernel overlay's `redirect` xattr. The
/// value is a name (relative: in the parent's lower copies) or a path from each lower
/// layer's root with a leading `/` (absolute), with no trailing NUL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LowerPath {
    Name(CString),
    Abs(Vec<CString>),
}

/// Longest redirect written (kernel overlay's `redirect_max` default): a longer one makes
/// the rename answer EXDEV, as there.
pub const REDIRECT_MAX: usize = 256;

impl LowerPath {
    /// A stored value, or None when it is malformed: empty, a relative one with a `/`, or
    /// a component that is `.` or `..` (a redirect never leaves the layer it is read in).
    pub fn parse(v: &[u8]) -> Option<LowerPath> {
        let ok = |c: &[u8]| !c.is_empty() && c != b"." && c != b".." && !c.contains(&0);
        match v.strip_prefix(b"/") {
            Some(rest) => {
                let comps: Vec<&[u8]> = rest
                    .split(|b| *b == b'/')
                    .filter(|c| !c.is_empty())
                    .collect();
                if comps.is_empty() || !comps.iter().all(|c| ok(c)) {
                    return None;
                }
                Some(LowerPath::Abs(
                    comps
                        .into_iter()
                        .filter_map(|c| CString::new(c).ok())
                        .collect(),
                ))
            }
            None if ok(v) && !v.contains(&b'/') => CString::new(v).ok().map(LowerPath::Name),
            None => None,
        }
    }

    /// The path in effect once the copy at `self` carries redirect `next`: a relative one
    /// renames the last component (kernel overlay's `ovl_check_redirect`), an absolute one
    /// replaces the path.
    pub fn then(&self, next: LowerPath) -> LowerPath {
        match (self, next) {
            (LowerPath::Abs(comps), LowerPath::Name(n)) => {
                let mut comps = comps.clone();
                if let Some(last) = comps.last_mut() {
                    *last = n;
                }
                LowerPath::Abs(comps)
            }
            (_, next) => next,
        }
    }

    /// The last component: the name looked up in the directory the rest leads to.
    pub fn leaf(&self) -> &CStr {
        match self {
            LowerPath::Name(n) => n,
            LowerPath::Abs(comps) => comps.last().map_or(c"", |c| c.as_c_str()),
        }
    }

    /// The xattr value kernel overlay writes for it.
    pub fn to_xattr(&self) -> Vec<u8> {
        match self {
            LowerPath::Name(n) => n.to_bytes().to_vec(),
            LowerPath::Abs(comps) => {
                let mut v = Vec::new();
                for c in comps {
                    v.push(b'/');
                    v.extend_from_slice(c.to_bytes());
                }
                v
            }
        }
    }
}

impl Found {
    pub fn top(&self) -> LayerIdx {
        self.layers[0]
    }
}

#[derive(Debug)]
pub enum Hit {
    Found(Found),
    /// Not in the merged view; `whiteout_layer` is where a whiteout stopped the search.
    Absent {
        whiteout_layer: Option<LayerIdx>,
    },
}

/// Resolve `name` in a merged directory whose copies are `parent_layers` (top-down), with
/// `dir_fd(layer)` giving the directory's fd in a layer.
/// `absent(layer)` may say that a layer certainly has no such name (see `dirindex`); the layer
/// is then not probed.
pub fn resolve(
    fmt: &Format,
    parent_layers: &[LayerIdx],
    mut dir_fd: impl FnMut(LayerIdx) -> Result<Arc<OwnedFd>>,
    absent: impl Fn(LayerIdx) -> bool,
    name: &CStr,
) -> Result<Hit> {
    if fmt.aufs && name.to_bytes().starts_with(crate::whiteout::AUFS_PREFIX) {
        return Ok(Hit::Absent {
            whiteout_layer: None,
        });
    }
    let mut found: Option<Found> = None;
    for (pos, &layer) in parent_layers.iter().enumerate() {
        if absent(layer) {
            continue;
        }
        let fd = dir_fd(layer)?;
        let st = match sys::fstatat_opt(fd.as_fd(), name)? {
            Some(st) => st,
            None if fmt.has_aufs_whiteout(fd.as_fd(), name)? => {
                if found.is_none() {
                    return Ok(Hit::Absent {
                        whiteout_layer: Some(layer),
                    });
                }
                break;
            }
            None => continue,
        };
        if sys::is_whiteout_stat(&st) {
            if found.is_none() {
                return Ok(Hit::Absent {
                    whiteout_layer: Some(layer),
                });
            }
            break;
        }
        let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
        let last = pos + 1 == parent_layers.len();
        match &mut found {
            None => {
                let opaque = is_dir && fmt.is_opaque(fd.as_fd(), name);
                found = Some(Found {
                    layers: vec![layer],
                    stats: vec![st],
                    is_dir,
                    opaque,
                    redirect: None,
                });
                if !is_dir || opaque || last {
                    break;
                }
            }
            Some(f) => {
                if !is_dir {
                    break;
                }
                f.layers.push(layer);
                f.stats.push(st);
                if last || fmt.is_opaque(fd.as_fd(), name) {
                    break;
                }
            }
        }
    }
    Ok(found.map_or(
        Hit::Absent {
            whiteout_layer: None,
        },
        Hit::Found,
    ))
}

/// Does any lower copy of the parent (layers after the upper) hold `name`, so that removing
/// the upper's entry would let it show through? (Kernel overlay's `ovl_lower_positive`.)
pub fn lower_positive(
    fmt: &Format,
    parent_layers: &[LayerIdx],
    upper: Option<LayerIdx>,
    mut dir_fd: impl FnMut(LayerIdx) -> Result<Arc<OwnedFd>>,
    name: &CStr,
) -> Result<bool> {
    for &layer in parent_layers.iter().filter(|l| Some(**l) != upper) {
        let fd = dir_fd(layer)?;
        if let Some(st) = sys::fstatat_opt(fd.as_fd(), name)? {
            return Ok(!sys::is_whiteout_stat(&st));
        }
        if fmt.has_aufs_whiteout(fd.as_fd(), name)? {
            return Ok(false);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_values_parse_as_kernel_overlay_writes_them() {
        assert_eq!(
            LowerPath::parse(b"d"),
            Some(LowerPath::Name(c"d".to_owned()))
        );
        let abs = LowerPath::parse(b"/a/b").expect("absolute");
        assert_eq!(abs, LowerPath::Abs(vec![c"a".to_owned(), c"b".to_owned()]));
        assert_eq!(abs.to_xattr(), b"/a/b");
        let rel = LowerPath::Name(c"c".to_owned());
        assert_eq!(abs.then(rel.clone()).to_xattr(), b"/a/c");
        assert_eq!(rel.then(abs.clone()), abs);
        let r = Redirects(vec![(0, rel.clone()), (2, abs.clone())]);
        assert_eq!(r.for_layer(0), None);
        assert_eq!(r.for_layer(1), Some(&rel));
        assert_eq!(r.for_layer(2), Some(&rel));
        assert_eq!(r.for_layer(3), Some(&abs));
        assert_eq!(r.carried_by(2), Some(&abs));
        assert_eq!(r.carried_by(1), None);
        for bad in [
            &b""[..],
            b"/",
            b"a/b",
            b"..",
            b".",
            b"/a/../b",
            b"/..",
            b"a\0",
        ] {
            assert_eq!(LowerPath::parse(bad), None, "{bad:?}");
        }
    }
}
