//! Extra attributes of an inode (mfsseteattr / mfsgeteattr), with MooseFS's
//! bit values: the master enforces them, mounts honour the cache ones, the
//! tools print and parse their names.

/// Whoever accesses the object counts as its owner.
pub const NOOWNER: u8 = 0x01;
/// Mounts do not cache its attributes.
pub const NOATTRCACHE: u8 = 0x02;
/// Mounts do not cache the lookups of names in it (a directory) or of
/// it.
pub const NOENTRYCACHE: u8 = 0x04;
/// It cannot be removed (unlink, rmdir, rename away): EPERM.
pub const UNDELETABLE: u8 = 0x20;
/// Data may only be appended: no truncate, no write without O_APPEND,
/// no attribute change, no removal; a directory takes new names but
/// loses none. EPERM.
pub const APPENDONLY: u8 = 0x40;
/// No change at all: data, attributes, names in it, its own names.
/// EPERM, also for root.
pub const IMMUTABLE: u8 = 0x80;
/// Every bit with its name, as the tools print and parse them.
pub const NAMES: [(&str, u8); 6] = [
    ("noowner", NOOWNER),
    ("noattrcache", NOATTRCACHE),
    ("noentrycache", NOENTRYCACHE),
    ("undeletable", UNDELETABLE),
    ("appendonly", APPENDONLY),
    ("immutable", IMMUTABLE),
];
/// Every bit known.
pub const ALL: u8 = NOOWNER | NOATTRCACHE | NOENTRYCACHE | UNDELETABLE | APPENDONLY | IMMUTABLE;

/// The names of the bits set in `bits`, comma-separated; `-` for none.
pub fn names(bits: u8) -> String {
    let set: Vec<&str> = NAMES
        .iter()
        .filter(|(_, b)| bits & b != 0)
        .map(|(n, _)| *n)
        .collect();
    if set.is_empty() {
        "-".to_string()
    } else {
        set.join(",")
    }
}

/// The bit of the attribute named `name`.
pub fn bit(name: &str) -> Option<u8> {
    NAMES.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_bits_agree() {
        assert_eq!(names(0), "-");
        assert_eq!(names(IMMUTABLE | NOOWNER), "noowner,immutable");
        for (n, b) in NAMES {
            assert_eq!(bit(n), Some(b));
            assert_eq!(names(b), n);
        }
        assert_eq!(bit("nodatacache"), None);
        assert_eq!(NAMES.iter().fold(0, |a, (_, b)| a | b), ALL);
    }
}
