import Foundation

/// Reads other processes' resident memory and CPU time from /proc (Linux), summed over `pids` (the nodes
/// of a cluster).
struct ProcessStats {
    let pids: [Int32]

    func rss() -> Int? {
        let values = pids.compactMap(rss(of:))
        return values.count == pids.count ? values.reduce(0, +) : nil
    }

    func cpuMicros() -> Int? {
        let values = pids.compactMap(cpuMicros(of:))
        return values.count == pids.count ? values.reduce(0, +) : nil
    }

    /// Resident set size in bytes.
    private func rss(of pid: Int32) -> Int? {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            let parts = line.split(separator: " ", omittingEmptySubsequences: true)
            if parts.count >= 2, let kib = Int(parts[1]) { return kib * 1024 }
        }
        return nil
    }

    /// User plus system CPU time in microseconds.
    private func cpuMicros(of pid: Int32) -> Int? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // After the command name: state is field 3, utime 14 and stime 15 (1-based) → offsets 11, 12.
        guard fields.count > 12, let user = Int(fields[11]), let system = Int(fields[12]) else { return nil }
        let ticks = sysconf(Int32(_SC_CLK_TCK))
        return (user + system) * 1_000_000 / max(ticks, 1)
    }
}
