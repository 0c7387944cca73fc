use proptest::prelude::*;

use super::*;
use crate::storage::log::io::StdIo;

fn sample(n: u32) -> (Header, Vec<HashEntry>) {
    let header = Header {
        base: 100,
        end: 100 + u64::from(n),
        segment_len: u64::from(n) * 50 + 1,
        count: n,
    };
    let mut entries: Vec<_> = (0..n)
        .map(|i| HashEntry {
            hash: u64::from(i % 7).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            relative_offset: i,
            position: i * 50,
        })
        .collect();
    entries.sort_unstable();
    (header, entries)
}

#[test]
fn round_trip_lookup_and_checks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.ids");
    let (header, entries) = sample(200);
    let file = write(&StdIo, &path, Kind::Ids, &header, entries.clone()).unwrap();
    for h in 0..7u64 {
        let hash = h.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let found = file.lookup(hash).unwrap();
        let want: Vec<_> = entries.iter().filter(|e| e.hash == hash).copied().collect();
        assert_eq!(found, want);
    }
    assert!(file.lookup(12345).unwrap().is_empty());
    let loaded = load(&StdIo, &path, Kind::Ids, 100, header.segment_len).unwrap();
    assert_eq!(loaded.bytes(), file.bytes());
    assert!(matches!(
        load(&StdIo, &path, Kind::Keys, 100, header.segment_len),
        Err(LoadError::Invalid(IndexError::Magic { .. }))
    ));
    assert!(matches!(
        load(&StdIo, &path, Kind::Ids, 101, header.segment_len),
        Err(LoadError::Invalid(IndexError::Mismatch {
            field: "base",
            ..
        }))
    ));
    assert!(matches!(
        load(&StdIo, &path, Kind::Ids, 100, 7),
        Err(LoadError::Invalid(IndexError::Mismatch { .. }))
    ));
}

fn encoded() -> Vec<u8> {
    let (header, entries) = sample(20);
    encode(Kind::Keys, &header, &entries)
}

proptest! {
    #[test]
    fn random_bytes_are_errors_never_panics(
        bytes in proptest::collection::vec(any::<u8>(), 0..400),
    ) {
        let _ = decode(Kind::Ids, &bytes);
        let _ = decode(Kind::Keys, &bytes);
        let _ = decode_header(Kind::Ids, &bytes, bytes.len() as u64);
    }

    #[test]
    fn random_bytes_behind_a_valid_magic_are_errors(
        tail in proptest::collection::vec(any::<u8>(), 0..400),
    ) {
        let mut bytes = b"WEIRKEY1".to_vec();
        bytes.extend_from_slice(&tail);
        prop_assert!(decode(Kind::Keys, &bytes).is_err());
    }

    #[test]
    fn mutated_files_are_errors_never_panics(
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        cut in any::<usize>(),
    ) {
        let good = encoded();
        let mut bytes = good.clone();
        for (at, v) in edits {
            let at = at % bytes.len();
            bytes[at] = v;
        }
        match decode(Kind::Keys, &bytes) {
            Ok(_) => prop_assert_eq!(&bytes, &good),
            Err(_) => prop_assert_ne!(&bytes, &good),
        }
        let cut = cut % good.len();
        prop_assert!(decode(Kind::Keys, &good[..cut]).is_err());
    }
}
