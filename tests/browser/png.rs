//! Screenshot files: where the browser tests write them (`test-artifacts/` at the crate
//! root, which git ignores and CI can keep), and a structural check of a PNG (signature,
//! every chunk's length and CRC-32, `IHDR` first and `IEND` last) that reads its size, so
//! a screenshot that is cut, empty or not a PNG at all fails the test that took it.

use std::path::PathBuf;

/// `test-artifacts/<sub>` at the crate root, made if missing.
pub fn artifacts(sub: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("test-artifacts")
        .join(sub);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The size of a PNG image, in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    pub width: u32,
    pub height: u32,
}

/// Checks that `png` is one whole PNG file and returns its size; panics naming `name`
/// and the fault otherwise.
pub fn check(name: &str, png: &[u8]) -> Size {
    const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    assert!(
        png.starts_with(SIGNATURE),
        "{name} is not a PNG: {:?}",
        &png[..png.len().min(16)]
    );
    let mut at = SIGNATURE.len();
    let mut chunks = Vec::new();
    let mut size = None;
    while at < png.len() {
        let header = png
            .get(at..at + 8)
            .unwrap_or_else(|| panic!("{name}: a cut chunk header at byte {at}"));
        let len = u32::from_be_bytes(header[..4].try_into().unwrap()) as usize;
        let kind = String::from_utf8_lossy(&header[4..8]).into_owned();
        let data_end = at + 8 + len;
        let stored = png
            .get(data_end..data_end + 4)
            .unwrap_or_else(|| panic!("{name}: chunk {kind} at byte {at} is cut"));
        let computed = crc32(&png[at + 4..data_end]);
        assert_eq!(
            u32::from_be_bytes(stored.try_into().unwrap()),
            computed,
            "{name}: chunk {kind} at byte {at} fails its CRC"
        );
        if kind == "IHDR" {
            assert_eq!(len, 13, "{name}: IHDR of {len} bytes");
            let data = &png[at + 8..data_end];
            size = Some(Size {
                width: u32::from_be_bytes(data[..4].try_into().unwrap()),
                height: u32::from_be_bytes(data[4..8].try_into().unwrap()),
            });
        }
        chunks.push(kind);
        at = data_end + 4;
    }
    assert_eq!(chunks.first().map(String::as_str), Some("IHDR"), "{name}");
    assert_eq!(chunks.last().map(String::as_str), Some("IEND"), "{name}");
    assert!(
        chunks.iter().any(|c| c == "IDAT"),
        "{name}: no image data ({chunks:?})"
    );
    let size = size.unwrap();
    assert!(size.width > 0 && size.height > 0, "{name} is {size:?}");
    size
}

/// CRC-32 (ISO 3309, as PNG uses it), bit by bit: a few screenshots need no table.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn crc32_matches_the_check_value() {
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
}
