/// Which Redis instance holds a channel: jump consistent hashing (Lamping and Veach) of the channel
/// name's FNV-1a hash. Every node computes the same answer from the same instance list, and adding an
/// instance at the end moves only about 1/n of the channels.
struct ShardRing: Sendable {
    let count: Int

    func index(of channel: String) -> Int {
        guard count > 1 else { return 0 }
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in channel.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01b3
        }
        var bucket: Int64 = -1
        var next: Int64 = 0
        while next < Int64(count) {
            bucket = next
            hash = hash &* 2_862_933_555_777_941_757 &+ 1
            next = Int64(Double(bucket + 1) * (Double(Int64(1) << 31) / Double((hash >> 33) + 1)))
        }
        return Int(bucket)
    }
}
