//! What the node agent reads off the machine: capacity (cpu, memory, ephemeral storage),
//! its address, and the inputs of the pressure conditions. Parsers are pure and tested;
//! the readers around them only open files under /proc or run `df`.

use std::path::Path;

/// Memory below which the node reports `MemoryPressure` (kubelet's default hard eviction
/// threshold `memory.available<100Mi`), in bytes.
pub const MEMORY_AVAILABLE_MIN_BYTES: u64 = 100 * 1024 * 1024;
/// Free share of the root directory's filesystem below which the node reports
/// `DiskPressure` (kubelet's `nodefs.available<10%`), in percent.
pub const DISK_AVAILABLE_MIN_PERCENT: u64 = 10;
/// Share of `pid_max` in use above which the node reports `PIDPressure`, in percent.
pub const PIDS_USED_MAX_PERCENT: u64 = 90;

/// A snapshot of the machine.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Machine {
    pub cpus: u64,
    pub memory_bytes: u64,
    pub memory_available_bytes: u64,
    pub disk_bytes: u64,
    pub disk_available_bytes: u64,
    pub pids_used: u64,
    pub pid_max: u64,
    pub kernel: String,
    pub os_image: String,
    pub machine_id: String,
    pub boot_id: String,
}

impl Machine {
    pub fn memory_pressure(&self) -> bool {
        self.memory_bytes > 0 && self.memory_available_bytes < MEMORY_AVAILABLE_MIN_BYTES
    }
    pub fn disk_pressure(&self) -> bool {
        self.disk_bytes > 0
            && self.disk_available_bytes * 100 < self.disk_bytes * DISK_AVAILABLE_MIN_PERCENT
    }
    pub fn pid_pressure(&self) -> bool {
        self.pid_max > 0 && self.pids_used * 100 > self.pid_max * PIDS_USED_MAX_PERCENT
    }
}

/// A `/proc/meminfo` field in bytes (`MemTotal:  16318480 kB`).
pub fn meminfo_bytes(meminfo: &str, field: &str) -> Option<u64> {
    meminfo.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        let mut parts = rest.split_whitespace();
        let n: u64 = parts.next()?.parse().ok()?;
        Some(match parts.next() {
            Some("kB") => n * 1024,
            _ => n,
        })
    })
}

/// `df -B1 --output=size,avail DIR` → (size, available) in bytes.
pub fn parse_df(out: &str) -> Option<(u64, u64)> {
    let line = out.lines().nth(1)?;
    let mut it = line.split_whitespace();
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// `PRETTY_NAME` from os-release.
pub fn os_pretty_name(os_release: &str) -> Option<String> {
    os_release.lines().find_map(|l| {
        Some(
            l.strip_prefix("PRETTY_NAME=")?
                .trim_matches('"')
                .to_string(),
        )
    })
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Reads the machine; `root` is the agent's root directory (its filesystem is the node's
/// ephemeral storage).
pub async fn read_machine(root: &Path) -> Machine {
    let meminfo = read("/proc/meminfo");
    let df = tokio::process::Command::new("df")
        .args(["-B1", "--output=size,avail"])
        .arg(root)
        .output()
        .await
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let (disk_bytes, disk_available_bytes) = parse_df(&df).unwrap_or((0, 0));
    let pids_used = std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .bytes()
                        .all(|b| b.is_ascii_digit())
                })
                .count() as u64
        })
        .unwrap_or(0);
    Machine {
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u64),
        memory_bytes: meminfo_bytes(&meminfo, "MemTotal").unwrap_or(0),
        memory_available_bytes: meminfo_bytes(&meminfo, "MemAvailable").unwrap_or(0),
        disk_bytes,
        disk_available_bytes,
        pids_used,
        pid_max: read("/proc/sys/kernel/pid_max").trim().parse().unwrap_or(0),
        kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
        os_image: os_pretty_name(&read("/etc/os-release")).unwrap_or_else(|| "Linux".into()),
        machine_id: read("/etc/machine-id").trim().to_string(),
        boot_id: read("/proc/sys/kernel/random/boot_id").trim().to_string(),
    }
}

/// The machine's primary IPv4 address: the source address of its default route, else the
/// first global address, else loopback.
pub async fn primary_ip() -> String {
    let out = tokio::process::Command::new("ip")
        .args(["-4", "-o", "route", "get", "1.1.1.1"])
        .output()
        .await
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    route_source(&out).unwrap_or_else(|| "127.0.0.1".into())
}

/// `src A.B.C.D` from `ip route get` output.
pub fn route_source(out: &str) -> Option<String> {
    let mut it = out.split_whitespace();
    while let Some(w) = it.next() {
        if w == "src" {
            return it.next().map(str::to_string);
        }
    }
    None
}

/// The host name (`/proc/sys/kernel/hostname`), lowercased as a Node name must be.
pub fn hostname() -> String {
    read("/proc/sys/kernel/hostname").trim().to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_fields_are_read_in_bytes() {
        let m = "MemTotal:       16318480 kB\nMemFree:         1000 kB\nMemAvailable:    2048 kB\n";
        assert_eq!(meminfo_bytes(m, "MemTotal"), Some(16_318_480 * 1024));
        assert_eq!(meminfo_bytes(m, "MemAvailable"), Some(2048 * 1024));
        assert_eq!(meminfo_bytes(m, "Mem"), None);
        assert_eq!(meminfo_bytes(m, "SwapTotal"), None);
    }

    #[test]
    fn df_output_gives_size_and_available_bytes() {
        let out = "1B-blocks     Avail\n270553796608 81604820992\n";
        assert_eq!(parse_df(out), Some((270_553_796_608, 81_604_820_992)));
        assert_eq!(parse_df("header only\n"), None);
    }

    #[test]
    fn the_route_source_is_the_primary_address() {
        let out = "1.1.1.1 via 10.0.2.2 dev eth0 src 10.0.2.15 uid 0 \\    cache \n";
        assert_eq!(route_source(out).as_deref(), Some("10.0.2.15"));
        assert_eq!(
            route_source("RTNETLINK answers: Network is unreachable"),
            None
        );
    }

    #[test]
    fn pressure_follows_the_kubelet_thresholds() {
        let mut m = Machine {
            memory_bytes: 8 << 30,
            memory_available_bytes: 50 << 20,
            disk_bytes: 100,
            disk_available_bytes: 9,
            pids_used: 95,
            pid_max: 100,
            ..Machine::default()
        };
        assert!(m.memory_pressure() && m.disk_pressure() && m.pid_pressure());
        m.memory_available_bytes = 1 << 30;
        m.disk_available_bytes = 50;
        m.pids_used = 10;
        assert!(!m.memory_pressure() && !m.disk_pressure() && !m.pid_pressure());
    }

    #[test]
    fn os_release_pretty_name_is_unquoted() {
        let r = "NAME=\"Debian\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n";
        assert_eq!(
            os_pretty_name(r).as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
    }
}
