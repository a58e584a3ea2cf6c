//! The memory this server may plan for, read once at start: the limit of its control
//! group when it has one, else the host's RAM.
//!
//! `server` derives the default `max_connections` from it, so that the connections an
//! attacker can hold open never outgrow a small host. The reading is Linux's:
//! `/proc/self/cgroup` names the process's group, `/proc/self/mountinfo` where that
//! group's hierarchy is mounted, and the group's `memory.max` (cgroup v2) or
//! `memory.limit_in_bytes` (cgroup v1), with those of its ancestors, bounds it;
//! `MemTotal` in `/proc/meminfo` is the host's RAM. The parsing is in pure functions,
//! tested below; [`budget`] is the thin shell that reads the files.

use std::fmt;
use std::path::{Path, PathBuf};

/// The memory the server may plan for, and where the figure came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Bytes.
    pub bytes: u64,
    /// Where `bytes` came from.
    pub source: Source,
}

/// Where a [`Budget`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The lowest cgroup v2 `memory.max` on the way from the process's group to the root
    /// of its hierarchy (systemd's `MemoryMax=`, a container's memory limit).
    CgroupV2,
    /// The lowest cgroup v1 `memory.limit_in_bytes` on that way.
    CgroupV1,
    /// `MemTotal` of `/proc/meminfo`: no group limit, or none below the RAM.
    MemTotal,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::CgroupV2 => "cgroup memory.max",
            Source::CgroupV1 => "cgroup memory.limit_in_bytes",
            Source::MemTotal => "MemTotal",
        })
    }
}

/// The memory budget of this process: its control group's memory limit when one is set
/// and below the RAM, else the RAM; `None` when neither can be read (not Linux, no
/// `/proc`).
pub fn budget() -> Option<Budget> {
    let read = |path: &Path| std::fs::read_to_string(path).ok();
    let ram = read(Path::new("/proc/meminfo")).and_then(|text| mem_total(&text));
    let groups = read(Path::new("/proc/self/cgroup")).unwrap_or_default();
    let mounts = read(Path::new("/proc/self/mountinfo")).unwrap_or_default();
    let mut limit: Option<Budget> = None;
    for (version, file, source) in [
        (Version::V2, "memory.max", Source::CgroupV2),
        (Version::V1, "memory.limit_in_bytes", Source::CgroupV1),
    ] {
        let Some(group) = group_path(&groups, version) else {
            continue;
        };
        let Some(mount) = hierarchy_mount(&mounts, version) else {
            continue;
        };
        let lowest = group_dirs(&mount, group)
            .iter()
            .filter_map(|dir| read(&dir.join(file)))
            .filter_map(|text| limit_value(&text))
            .min();
        if let Some(bytes) = lowest
            && limit.is_none_or(|l| bytes < l.bytes)
        {
            limit = Some(Budget { bytes, source });
        }
    }
    combine(limit, ram)
}

/// The budget from a group limit and the RAM: the limit when it is below the RAM (a
/// limit above it gives nothing more), else the RAM.
pub fn combine(limit: Option<Budget>, ram: Option<u64>) -> Option<Budget> {
    let ram = ram.map(|bytes| Budget {
        bytes,
        source: Source::MemTotal,
    });
    match (limit, ram) {
        (Some(limit), Some(ram)) if ram.bytes <= limit.bytes => Some(ram),
        (Some(limit), _) => Some(limit),
        (None, ram) => ram,
    }
}

/// `MemTotal` of a `/proc/meminfo` text, bytes.
pub fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut words = line["MemTotal:".len()..].split_whitespace();
    let kib: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") | None => kib.checked_mul(1024),
        Some(_) => None,
    }
}

/// The limit a `memory.max` or `memory.limit_in_bytes` file holds, bytes; `None` for
/// no limit: `max` (v2), or v1's "unlimited", the largest page-aligned `i64`, or any
/// value of 2^60 bytes or more.
pub fn limit_value(text: &str) -> Option<u64> {
    let text = text.trim();
    if text == "max" {
        return None;
    }
    text.parse::<u64>().ok().filter(|&bytes| bytes < 1 << 60)
}

/// The cgroup hierarchy a path belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// The unified hierarchy (cgroup v2).
    V2,
    /// The v1 hierarchy of the memory controller.
    V1,
}

/// The process's group in `hierarchy`, from a `/proc/self/cgroup` text: the path of the
/// `0::PATH` line (v2), or of the line whose controllers include `memory` (v1).
pub fn group_path(proc_self_cgroup: &str, hierarchy: Version) -> Option<&str> {
    proc_self_cgroup.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (id, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let wanted = match hierarchy {
            Version::V2 => id == "0" && controllers.is_empty(),
            Version::V1 => controllers.split(',').any(|c| c == "memory"),
        };
        wanted.then_some(path)
    })
}

/// Where a cgroup hierarchy is mounted, from a `/proc/self/mountinfo` text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The group of the hierarchy shown at the mount point (`/` unless a subtree is
    /// mounted, as in some containers).
    pub root: String,
    /// Where it is mounted.
    pub point: PathBuf,
}

/// The mount of `hierarchy` in a `/proc/self/mountinfo` text: file system type
/// `cgroup2`, or `cgroup` with the `memory` option.
pub fn hierarchy_mount(mountinfo: &str, hierarchy: Version) -> Option<Mount> {
    mountinfo.lines().find_map(|line| {
        // ID PARENT MAJ:MIN ROOT POINT OPTIONS [OPTIONAL...] - TYPE SOURCE SUPER_OPTIONS
        let (mine, theirs) = line.split_once(" - ")?;
        let mine: Vec<&str> = mine.split(' ').collect();
        let mut theirs = theirs.split(' ');
        let (fs_type, _source, options) = (theirs.next()?, theirs.next()?, theirs.next()?);
        let wanted = match hierarchy {
            Version::V2 => fs_type == "cgroup2",
            Version::V1 => fs_type == "cgroup" && options.split(',').any(|o| o == "memory"),
        };
        (wanted && mine.len() >= 5).then(|| Mount {
            root: unescape(mine[3]),
            point: PathBuf::from(unescape(mine[4])),
        })
    })
}

/// The directories whose limits bound the group `path`: its own, then each ancestor's up
/// to the mount point (only the mount point when the group is not under the mounted
/// subtree, as in a container that sees its own group as the root).
pub fn group_dirs(mount: &Mount, path: &str) -> Vec<PathBuf> {
    let root = mount.root.trim_end_matches('/');
    let inside = match path.strip_prefix(root) {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => rest,
        _ => "",
    };
    let mut dirs = Vec::new();
    let mut rel = inside.trim_matches('/');
    loop {
        dirs.push(if rel.is_empty() {
            mount.point.clone()
        } else {
            mount.point.join(rel)
        });
        match rel.rfind('/') {
            Some(i) => rel = &rel[..i],
            None if rel.is_empty() => break,
            None => rel = "",
        }
    }
    dirs
}

/// Undoes mountinfo's octal escapes (`\040` for a space and the like).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let code = bytes.get(i + 1..i + 4).and_then(|digits| {
            std::str::from_utf8(digits)
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        });
        match (bytes[i], code) {
            (b'\\', Some(code)) => {
                out.push(code);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn mem_total_is_read_in_bytes() {
        let text = "MemTotal:         503276 kB\nMemFree:  1 kB\nMemAvailable: 2 kB\n";
        assert_eq!(mem_total(text), Some(503_276 * 1024));
        assert_eq!(mem_total("MemFree: 1 kB\n"), None);
        assert_eq!(mem_total("MemTotal: lots kB\n"), None);
        assert_eq!(mem_total("MemTotal: 12 MB\n"), None);
    }

    #[test]
    fn limit_values_and_no_limit() {
        assert_eq!(limit_value("536870912\n"), Some(512 * MIB));
        assert_eq!(limit_value("max\n"), None);
        // cgroup v1's "unlimited" on 4 KiB pages.
        assert_eq!(limit_value("9223372036854771712\n"), None);
        assert_eq!(limit_value(""), None);
        assert_eq!(limit_value("-1"), None);
    }

    #[test]
    fn the_group_of_each_hierarchy() {
        let hybrid = "12:pids:/\n4:memory:/process_api/abc\n1:name=systemd:/\n0::/\n";
        assert_eq!(group_path(hybrid, Version::V2), Some("/"));
        assert_eq!(group_path(hybrid, Version::V1), Some("/process_api/abc"));
        let unified = "0::/system.slice/latchkey.service\n";
        assert_eq!(
            group_path(unified, Version::V2),
            Some("/system.slice/latchkey.service")
        );
        assert_eq!(group_path(unified, Version::V1), None);
        // Controllers listed together on one v1 hierarchy.
        assert_eq!(group_path("3:cpu,memory:/a/b\n", Version::V1), Some("/a/b"));
        // A named hierarchy is not v2.
        assert_eq!(group_path("1:name=systemd:/x\n", Version::V2), None);
    }

    #[test]
    fn the_mount_of_each_hierarchy() {
        let text = "\
25 30 0:22 / /sys/fs/cgroup rw,nosuid - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid shared:9 - cgroup2 cgroup2 rw,nsdelegate
31 25 0:28 / /sys/fs/cgroup/memory rw,nosuid shared:14 - cgroup cgroup rw,memory
32 25 0:29 /docker/abc /sys/fs/cgroup/cpu\\040x rw - cgroup cgroup rw,cpu
";
        assert_eq!(
            hierarchy_mount(text, Version::V2),
            Some(Mount {
                root: "/".into(),
                point: "/sys/fs/cgroup/unified".into()
            })
        );
        assert_eq!(
            hierarchy_mount(text, Version::V1),
            Some(Mount {
                root: "/".into(),
                point: "/sys/fs/cgroup/memory".into()
            })
        );
        assert_eq!(hierarchy_mount("", Version::V2), None);
        assert_eq!(unescape("/a\\040b\\134c"), "/a b\\c");
        assert_eq!(unescape("/a\\04"), "/a\\04");
    }

    #[test]
    fn a_group_is_bounded_by_itself_and_its_ancestors() {
        let mount = Mount {
            root: "/".into(),
            point: "/sys/fs/cgroup".into(),
        };
        let dirs = group_dirs(&mount, "/system.slice/latchkey.service");
        assert_eq!(
            dirs,
            [
                PathBuf::from("/sys/fs/cgroup/system.slice/latchkey.service"),
                PathBuf::from("/sys/fs/cgroup/system.slice"),
                PathBuf::from("/sys/fs/cgroup"),
            ]
        );
        assert_eq!(group_dirs(&mount, "/"), [PathBuf::from("/sys/fs/cgroup")]);
        // A container's subtree mounted as the root: the path is read below it.
        let sub = Mount {
            root: "/docker/abc".into(),
            point: "/sys/fs/cgroup/memory".into(),
        };
        assert_eq!(
            group_dirs(&sub, "/docker/abc/inner"),
            [
                PathBuf::from("/sys/fs/cgroup/memory/inner"),
                PathBuf::from("/sys/fs/cgroup/memory"),
            ]
        );
        // A group outside the mounted subtree: only the mount point is known.
        assert_eq!(
            group_dirs(&sub, "/docker/abcdef"),
            [PathBuf::from("/sys/fs/cgroup/memory")]
        );
    }

    #[test]
    fn a_group_limit_counts_only_below_the_ram() {
        let limit = |bytes| {
            Some(Budget {
                bytes,
                source: Source::CgroupV2,
            })
        };
        assert_eq!(
            combine(limit(512 * MIB), Some(24 * 1024 * MIB)),
            limit(512 * MIB)
        );
        assert_eq!(
            combine(limit(64 * 1024 * MIB), Some(480 * MIB)),
            Some(Budget {
                bytes: 480 * MIB,
                source: Source::MemTotal
            })
        );
        assert_eq!(combine(limit(512 * MIB), None), limit(512 * MIB));
        assert_eq!(combine(None, None), None);
    }

    #[test]
    fn this_host_has_a_budget() {
        // Linux with /proc: the RAM at least.
        let budget = budget().expect("a memory budget on Linux");
        assert!(budget.bytes >= 16 * MIB, "{budget:?}");
    }
}
