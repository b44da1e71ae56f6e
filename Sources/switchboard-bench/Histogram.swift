/// Latency histogram in microseconds: 16 sub-buckets per power of two (error under 7%), mergeable
/// across worker processes by adding counts.
struct Histogram: Codable, Sendable {
    static let subBuckets = 16
    private(set) var counts = [UInt64](repeating: 0, count: 64 * subBuckets)
    private(set) var total: UInt64 = 0
    private(set) var max: UInt64 = 0

    static func index(_ value: UInt64) -> Int {
        guard value >= UInt64(subBuckets) else { return Int(value) }
        let magnitude = 63 - value.leadingZeroBitCount  // floor(log2)
        let shift = magnitude - 4
        let sub = Int((value >> UInt64(shift)) & UInt64(subBuckets - 1))
        return (shift + 1) * subBuckets + sub
    }

    static func lowerBound(_ index: Int) -> UInt64 {
        guard index >= subBuckets else { return UInt64(index) }
        let shift = index / subBuckets - 1
        let sub = UInt64(index % subBuckets)
        return (UInt64(subBuckets) + sub) << UInt64(shift)
    }

    mutating func record(_ micros: UInt64) {
        counts[Self.index(micros)] += 1
        total += 1
        if micros > max { max = micros }
    }

    mutating func merge(_ other: Histogram) {
        for index in counts.indices { counts[index] += other.counts[index] }
        total += other.total
        max = Swift.max(max, other.max)
    }

    func percentile(_ p: Double) -> UInt64 {
        guard total > 0 else { return 0 }
        let rank = UInt64((Double(total) * p / 100).rounded(.up))
        var seen: UInt64 = 0
        for (index, count) in counts.enumerated() where count > 0 {
            seen += count
            if seen >= rank { return Swift.min(Self.lowerBound(index + 1), max) }
        }
        return max
    }
}
