//! Properties of agent-bundle unpacking against hostile archives: whatever the bytes (not
//! gzip, gzip of garbage, tar archives with climbing or absolute paths, links, devices,
//! GNU and PAX long names, declared sizes that lie or overflow), unpacking never panics,
//! never yields a path outside the bundle, and refuses with a clear 4xx error; and the
//! digest depends on the files only, not on their order or tar metadata.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use berth_api::bundle::{digest_files, unpack};
use proptest::prelude::*;
use std::io::Write;

const TOML: &[u8] = b"name = \"bot\"\n[model]\nname = \"mock/echo\"\n";

#[derive(Debug, Clone)]
enum Name {
    /// In the header's own 100-byte field.
    Plain(Vec<u8>),
    /// In a GNU `L` entry ahead of the header.
    GnuLong(Vec<u8>),
    /// In a PAX `x` entry ahead of the header.
    Pax(Vec<u8>),
}

#[derive(Debug, Clone)]
struct Entry {
    name: Name,
    kind: tar::EntryType,
    /// What the header says; `None` is the true length of `data`.
    declared: Option<u64>,
    data: Vec<u8>,
    link: Vec<u8>,
    mtime: u64,
    mode: u32,
}

fn block_pad(out: &mut Vec<u8>) {
    let rem = out.len() % 512;
    if rem != 0 {
        out.resize(out.len() + 512 - rem, 0);
    }
}

fn header(name: &[u8], kind: tar::EntryType, size: u64, mtime: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mtime(mtime);
    h.set_mode(mode);
    // Written raw, so that hostile names reach the parser unchanged.
    let field = &mut h.as_old_mut().name;
    let n = name.len().min(field.len());
    field[..n].copy_from_slice(&name[..n]);
    h
}

fn push(out: &mut Vec<u8>, mut h: tar::Header, data: &[u8]) {
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    block_pad(out);
}

/// A tar archive written byte by byte, so that nothing the `tar` crate's builder would
/// refuse (`..`, absolute paths, sizes that lie) is kept out.
fn tar_bytes(entries: &[Entry], end_blocks: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let name: &[u8] = match &e.name {
            Name::Plain(n) => n,
            Name::GnuLong(n) => {
                let mut data = n.clone();
                data.push(0);
                let h = header(
                    b"././@LongLink",
                    tar::EntryType::GNULongName,
                    data.len() as u64,
                    0,
                    0o644,
                );
                push(&mut out, h, &data);
                b"placeholder"
            }
            Name::Pax(n) => {
                let mut record = b" path=".to_vec();
                record.extend_from_slice(n);
                record.push(b'\n');
                // The length prefix counts itself.
                let mut len = record.len() + 1;
                while format!("{len}").len() + record.len() != len {
                    len += 1;
                }
                let mut data = format!("{len}").into_bytes();
                data.extend_from_slice(&record);
                let h = header(b"pax", tar::EntryType::XHeader, data.len() as u64, 0, 0o644);
                push(&mut out, h, &data);
                b"placeholder"
            }
        };
        let size = e.declared.unwrap_or(e.data.len() as u64);
        let mut h = header(name, e.kind, size, e.mtime, e.mode);
        if !e.link.is_empty() {
            let field = &mut h.as_old_mut().linkname;
            let n = e.link.len().min(field.len());
            field[..n].copy_from_slice(&e.link[..n]);
        }
        push(&mut out, h, &e.data);
    }
    if end_blocks {
        out.extend_from_slice(&[0u8; 1024]);
    }
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// Path segments an attacker would try.
fn segment() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => "[a-z0-9_.-]{1,8}".prop_map(String::into_bytes),
        2 => Just(b"..".to_vec()),
        1 => Just(b".".to_vec()),
        1 => Just(b"".to_vec()),
        1 => Just(b"agent.toml".to_vec()),
        1 => Just("caf\u{e9}\u{202e}".as_bytes().to_vec()),
        1 => Just(b"\xff\xfe".to_vec()),
        1 => Just(b"a\\..\\b".to_vec()),
    ]
}

fn path() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<bool>(),
        prop::collection::vec(segment(), 1..5),
        any::<bool>(),
    )
        .prop_map(|(absolute, segs, trailing)| {
            let mut p = if absolute { b"/".to_vec() } else { Vec::new() };
            p.extend(segs.join(&b'/'));
            if trailing {
                p.push(b'/');
            }
            p
        })
}

fn name() -> impl Strategy<Value = Name> {
    prop_oneof![
        6 => path().prop_map(Name::Plain),
        1 => path().prop_map(|mut p| { p.splice(0..0, b"x/".repeat(60)); Name::GnuLong(p) }),
        1 => path().prop_map(Name::Pax),
    ]
}

fn kind() -> impl Strategy<Value = tar::EntryType> {
    prop_oneof![
        8 => Just(tar::EntryType::Regular),
        2 => Just(tar::EntryType::Directory),
        1 => Just(tar::EntryType::Symlink),
        1 => Just(tar::EntryType::Link),
        1 => Just(tar::EntryType::Char),
        1 => Just(tar::EntryType::Block),
        1 => Just(tar::EntryType::Fifo),
        1 => Just(tar::EntryType::Continuous),
        1 => Just(tar::EntryType::GNUSparse),
        1 => any::<u8>().prop_map(tar::EntryType::new),
    ]
}

fn data() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(TOML.to_vec()),
        prop::collection::vec(any::<u8>(), 0..700),
    ]
}

fn entry(lying_sizes: bool) -> impl Strategy<Value = Entry> {
    let declared = if lying_sizes {
        prop_oneof![
            4 => Just(None),
            1 => (0u64..2048).prop_map(Some),
            1 => Just(Some(u64::MAX - 1024)),
            1 => Just(Some(u64::MAX / 2)),
            1 => Just(Some(300 * 1024 * 1024)),
            1 => Just(Some(8u64.pow(11))),
        ]
        .boxed()
    } else {
        Just(None).boxed()
    };
    (
        name(),
        kind(),
        declared,
        data(),
        prop_oneof![Just(Vec::new()), path()],
        any::<u32>(),
        0u32..0o7777,
    )
        .prop_map(|(name, kind, declared, data, link, mtime, mode)| Entry {
            name,
            kind,
            declared,
            data,
            link,
            mtime: u64::from(mtime),
            mode,
        })
}

/// The archive always has a good `agent.toml` somewhere, so that refusals come from the
/// hostile entries rather than from a missing manifest.
fn archive(lying_sizes: bool) -> impl Strategy<Value = Vec<Entry>> {
    (
        prop::collection::vec(entry(lying_sizes), 0..6),
        any::<usize>(),
    )
        .prop_map(|(mut entries, at)| {
            let k = at % (entries.len() + 1);
            entries.insert(
                k,
                Entry {
                    name: Name::Plain(b"agent.toml".to_vec()),
                    kind: tar::EntryType::Regular,
                    declared: None,
                    data: TOML.to_vec(),
                    link: Vec::new(),
                    mtime: 0,
                    mode: 0o644,
                },
            );
            entries
        })
}

fn raw_name(n: &Name) -> &[u8] {
    match n {
        Name::Plain(p) | Name::GnuLong(p) | Name::Pax(p) => p,
    }
}

/// A path the bundle may hold: relative, no empty, `.` or `..` segment.
fn is_inside(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && path
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != "..")
}

/// What any answer must be: a bundle whose files all live inside it and whose digest is
/// that of its files, or a refusal a client can act on.
fn check_answer(
    r: Result<berth_api::bundle::Bundle, berth_api::ApiError>,
) -> Result<bool, TestCaseError> {
    match r {
        Ok(b) => {
            for path in b.files.keys() {
                prop_assert!(is_inside(path), "{:?} is outside the bundle", path);
            }
            prop_assert!(b.files.contains_key("agent.toml"));
            prop_assert_eq!(&b.digest, &digest_files(&b.files));
            prop_assert_eq!(b.manifest.name.as_str(), "bot");
            Ok(true)
        }
        Err(e) => {
            prop_assert!(
                ["invalid_bundle", "invalid_manifest", "payload_too_large"].contains(&e.code),
                "{:?}",
                e
            );
            prop_assert!(e.status.is_client_error(), "{:?}", e);
            prop_assert!(!e.message.is_empty());
            Ok(false)
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_are_refused_clearly(bytes in prop::collection::vec(any::<u8>(), 0..2048), gz_magic in any::<bool>()) {
        let mut bytes = bytes;
        if gz_magic {
            bytes.splice(0..0, [0x1f, 0x8b]);
        }
        prop_assert!(!check_answer(unpack("bot", &bytes))?);
        // The same garbage compressed: gzip is fine, the tar inside is not.
        let _ = check_answer(unpack("bot", &gzip(&bytes)))?;
    }

    #[test]
    fn hostile_archives_never_panic_nor_escape(
        entries in archive(true),
        end_blocks in any::<bool>(),
        cut in prop::option::of(any::<usize>()),
    ) {
        let tar = tar_bytes(&entries, end_blocks);
        let mut gz = gzip(&tar);
        if let Some(c) = cut {
            gz.truncate(c % (gz.len() + 1));
        }
        check_answer(unpack("bot", &gz))?;
        // An uncompressed tar is refused, not misread.
        prop_assert!(!check_answer(unpack("bot", &tar))?);
    }

    #[test]
    fn a_well_framed_archive_with_a_hostile_entry_is_refused(entries in archive(false)) {
        let hostile = entries.iter().any(|e| {
            let raw = raw_name(&e.name);
            let climbs = raw.starts_with(b"/") || raw.split(|b| *b == b'/').any(|s| s == b"..");
            let special = !(e.kind.is_file() || e.kind.is_dir());
            climbs || special
        });
        let accepted = check_answer(unpack("bot", &gzip(&tar_bytes(&entries, true))))?;
        if hostile {
            prop_assert!(!accepted, "a hostile entry was accepted: {:?}", entries);
        }
    }

    #[test]
    fn the_digest_depends_on_the_files_not_their_order(
        files in prop::collection::btree_map("[a-z]{1,6}(/[a-z]{1,6})?\\.md", prop::collection::vec(any::<u8>(), 0..300), 0..6),
        order in any::<u64>(),
        metas in prop::collection::vec((any::<u32>(), 0u32..0o7777, any::<bool>()), 7),
    ) {
        let mut all: Vec<(String, Vec<u8>)> = files.into_iter().collect();
        all.push(("agent.toml".into(), TOML.to_vec()));
        let as_entries = |list: &[(String, Vec<u8>)], salt: usize| -> Vec<Entry> {
            list.iter().enumerate().map(|(i, (p, d))| {
                let (mtime, mode, dot) = metas[(i + salt) % metas.len()];
                Entry {
                    name: Name::Plain(if dot { format!("./{p}") } else { p.clone() }.into_bytes()),
                    kind: tar::EntryType::Regular,
                    declared: None,
                    data: d.clone(),
                    link: Vec::new(),
                    mtime: u64::from(mtime),
                    mode,
                }
            }).collect()
        };
        let a = unpack("bot", &gzip(&tar_bytes(&as_entries(&all, 0), true))).unwrap();
        // Another order (a rotation and a reversal chosen by `order`), other metadata.
        let mut shuffled = all.clone();
        let n = shuffled.len();
        shuffled.rotate_left((order as usize) % n);
        if order & 1 == 1 {
            shuffled.reverse();
        }
        let b = unpack("bot", &gzip(&tar_bytes(&as_entries(&shuffled, 3), true))).unwrap();
        prop_assert_eq!(&a.digest, &b.digest);
        prop_assert_eq!(&a.files, &b.files);
        // But the content does count.
        if let Some((p, d)) = all.iter().find(|(p, _)| p != "agent.toml") {
            let mut changed = all.clone();
            for (q, e) in &mut changed {
                if q == p {
                    e.push(0);
                }
            }
            let c = unpack("bot", &gzip(&tar_bytes(&as_entries(&changed, 0), true))).unwrap();
            prop_assert_ne!(&a.digest, &c.digest, "{} {:?}", p, d);
        }
    }
}

/// Two entries whose declared sizes add up past `u64::MAX`: the running total must not
/// overflow (a panic in a debug build, a wrapped, tiny total in a release one).
#[test]
fn declared_sizes_that_overflow_the_total_are_refused() {
    let entries = [
        Entry {
            name: Name::Plain(b"agent.toml".to_vec()),
            kind: tar::EntryType::Regular,
            declared: None,
            data: TOML.to_vec(),
            link: Vec::new(),
            mtime: 0,
            mode: 0o644,
        },
        Entry {
            name: Name::Plain(b"big".to_vec()),
            kind: tar::EntryType::Regular,
            declared: Some(u64::MAX - 1024),
            data: b"x".to_vec(),
            link: Vec::new(),
            mtime: 0,
            mode: 0o644,
        },
    ];
    let e = unpack("bot", &gzip(&tar_bytes(&entries, true)))
        .err()
        .expect("refused");
    assert!(e.status.is_client_error(), "{e:?}");
}
