#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// A set of IP addresses given as single addresses or CIDR ranges (`10.0.0.0/8`, `fd00::/8`, `::1`): the
/// trusted proxies. A load balancer's addresses come from a subnet, so listing them one by one does not
/// work; an entry that is not an address or a range is refused when the setting is read.
package struct AddressRanges: Sendable, Equatable {
    private struct Range: Sendable, Equatable {
        /// 4 or 16 bytes.
        var network: [UInt8]
        var prefixLength: Int

        func contains(_ address: [UInt8]) -> Bool {
            guard address.count == network.count else { return false }
            var bits = prefixLength
            for index in network.indices where bits > 0 {
                let mask: UInt8 = bits >= 8 ? 0xFF : ~(0xFF >> UInt8(bits))
                guard address[index] & mask == network[index] & mask else { return false }
                bits -= 8
            }
            return true
        }
    }

    private let ranges: [Range]
    /// The entries that are not addresses or ranges (empty when all are good).
    package let invalid: [String]

    package init(_ entries: [String]) {
        var ranges: [Range] = []
        var invalid: [String] = []
        for entry in entries {
            let parts = entry.split(separator: "/", maxSplits: 1)
            guard let first = parts.first, let address = Self.bytes(String(first)) else {
                invalid.append(entry)
                continue
            }
            let maximum = address.count * 8
            let length = parts.count == 2 ? Int(parts[1]) : maximum
            guard let length, (0...maximum).contains(length) else {
                invalid.append(entry)
                continue
            }
            ranges.append(Range(network: address, prefixLength: length))
        }
        self.ranges = ranges
        self.invalid = invalid
    }

    package var isEmpty: Bool { ranges.isEmpty }

    package func contains(_ address: String) -> Bool {
        guard !ranges.isEmpty, let bytes = Self.bytes(address) else { return false }
        return ranges.contains { $0.contains(bytes) }
    }

    /// The address's bytes (IPv4-mapped IPv6 addresses as IPv4), or nil when it is not an address.
    static func bytes(_ text: String) -> [UInt8]? {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            return withUnsafeBytes(of: &v4) { Array($0) }
        }
        var v6 = in6_addr()
        guard inet_pton(AF_INET6, text, &v6) == 1 else { return nil }
        let bytes = withUnsafeBytes(of: &v6) { Array($0) }
        if bytes[0..<10].allSatisfy({ $0 == 0 }), bytes[10] == 0xFF, bytes[11] == 0xFF { return Array(bytes[12...]) }
        return bytes
    }
}
