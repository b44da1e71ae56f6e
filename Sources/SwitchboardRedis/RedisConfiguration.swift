import Foundation
import NIOCore
import NIOSSL

/// Where a Redis server is and how to talk to it.
public struct RedisConfiguration: Sendable {
    /// Host name or IP address. With `sentinel` set, the sentinels name the host to connect to instead.
    public var host = "127.0.0.1"
    /// TCP port. Default 6379.
    public var port = 6379
    /// ACL user for `AUTH`; nil authenticates as `default` when `password` is set.
    public var username: String?
    /// Sent with `HELLO 3` (or `AUTH` on older servers) on every connection; nil: no authentication.
    public var password: String?
    /// Logical database selected after connecting (`SELECT`, only when not 0). Default 0.
    public var database = 0
    /// A command without a reply after this long fails with `.timeout`, and the connection is closed
    /// (its replies can no longer be matched to commands).
    public var commandTimeout = TimeAmount.seconds(5)
    /// Time allowed to open the TCP connection, to Redis or to a sentinel. Default 5 s.
    public var connectTimeout = TimeAmount.seconds(5)
    /// How often a pub/sub connection, which otherwise only reads, sends PING: a path to Redis that went
    /// silent (host gone, a virtual IP moved, a NAT dropping an idle flow) fails no read, so without it a
    /// node would look healthy while receiving nothing. Detection takes at most this plus `commandTimeout`.
    public var pingInterval = TimeAmount.seconds(5)
    /// Speak TLS (a `rediss://` address); nil: plain TCP.
    public var tls: TLSConfiguration?
    /// Find the primary through Redis Sentinel (a `redis+sentinel://` address): `host` and `port` are then
    /// asked of the sentinels before every connection, so a failover is followed on reconnection.
    public var sentinel: SentinelConfiguration?

    /// Plain TCP to `host:port`, database 0, no credentials.
    public init(host: String = "127.0.0.1", port: Int = 6379) {
        self.host = host
        self.port = port
    }

    /// `redis://[[user]:password@]host[:port][/db]`, or `rediss://` for TLS (the system's trust roots).
    public init(url: String) throws {
        self.init()
        guard let schemeEnd = url.range(of: "://") else {
            throw RedisAddressError(url, "expected redis://, rediss:// or redis+sentinel://")
        }
        let scheme = url[..<schemeEnd.lowerBound].lowercased()
        if scheme == "redis+sentinel" {
            try readSentinelAddress(url, rest: url[schemeEnd.upperBound...])
            return
        }
        guard scheme == "redis" || scheme == "rediss" else { throw RedisAddressError(url, "unknown scheme \(scheme)") }
        var rest = Substring(url[schemeEnd.upperBound...])
        readCredentials(&rest)
        if let slash = rest.firstIndex(of: "/") {
            let path = rest[rest.index(after: slash)...]
            rest = rest[..<slash]
            if !path.isEmpty {
                guard let database = Int(path), database >= 0 else {
                    throw RedisAddressError(url, "bad database number")
                }
                self.database = database
            }
        }
        if let colon = rest.lastIndex(of: ":"), !rest.hasSuffix("]") {
            guard let port = Int(rest[rest.index(after: colon)...]), (1...65535).contains(port) else {
                throw RedisAddressError(url, "bad port")
            }
            self.port = port
            rest = rest[..<colon]
        }
        host = rest.trimmingCharacters(in: ["[", "]"])
        guard !host.isEmpty else { throw RedisAddressError(url, "no host") }
        if scheme == "rediss" { tls = .makeClientConfiguration() }
    }

    /// `[user]:password@` or `password@` at the start of `rest`, taken off it.
    private mutating func readCredentials(_ rest: inout Substring) {
        guard let at = rest.lastIndex(of: "@") else { return }
        let credentials = rest[..<at]
        rest = rest[rest.index(after: at)...]
        if let colon = credentials.firstIndex(of: ":") {
            let user = credentials[..<colon]
            username = user.isEmpty ? nil : String(user)
            password = String(credentials[credentials.index(after: colon)...]).removingPercentEscapes
        } else {
            password = String(credentials).removingPercentEscapes
        }
    }

    /// `redis+sentinel://[[user]:password@]sentinel[:port][,sentinel[:port]…]/primary-name[/db]`: the
    /// credentials and database are the data nodes'; sentinels listen on 26379 unless a port is given.
    private mutating func readSentinelAddress(_ url: String, rest: Substring) throws {
        var rest = rest
        readCredentials(&rest)
        let parts = rest.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count >= 2, !parts[1].isEmpty else { throw RedisAddressError(url, "no primary name") }
        if parts.count >= 3, !parts[2].isEmpty {
            guard let database = Int(parts[2]), database >= 0 else {
                throw RedisAddressError(url, "bad database number")
            }
            self.database = database
        }
        var sentinels: [(host: String, port: Int)] = []
        for address in parts[0].split(separator: ",") {
            var host = Substring(address)
            var port = 26379
            if let colon = address.lastIndex(of: ":"), !address.hasSuffix("]") {
                guard let parsed = Int(address[address.index(after: colon)...]), (1...65535).contains(parsed) else {
                    throw RedisAddressError(url, "bad port")
                }
                port = parsed
                host = address[..<colon]
            }
            let name = host.trimmingCharacters(in: ["[", "]"])
            guard !name.isEmpty else { throw RedisAddressError(url, "no host") }
            sentinels.append((name, port))
        }
        guard let first = sentinels.first else { throw RedisAddressError(url, "no sentinel") }
        host = first.host
        port = first.port
        sentinel = SentinelConfiguration(sentinels: sentinels, primaryName: String(parts[1]))
    }

    /// The address without credentials, for logs.
    public var displayAddress: String {
        if let sentinel {
            let sentinels = sentinel.sentinels.map { "\($0.host):\($0.port)" }.joined(separator: ",")
            return "redis+sentinel://\(sentinels)/\(sentinel.primaryName)/\(database)"
        }
        return "\(tls == nil ? "redis" : "rediss")://\(host):\(port)/\(database)"
    }
}

/// Where the sentinels are and which primary to ask them for.
public struct SentinelConfiguration: Sendable {
    /// Asked in this order; the first whose answer is a primary wins.
    public var sentinels: [(host: String, port: Int)]
    /// The name the sentinels monitor the primary under (`sentinel monitor NAME …`).
    public var primaryName: String

    /// The sentinels are asked in the order given; with none, no primary can be found.
    public init(sentinels: [(host: String, port: Int)], primaryName: String) {
        self.sentinels = sentinels
        self.primaryName = primaryName
    }
}

/// A Redis address that cannot be used.
public struct RedisAddressError: Error, CustomStringConvertible {
    /// What is wrong, with the address shown without its credentials.
    public let description: String
    init(_ url: String, _ problem: String) {
        // Never echo a password: keep only what follows the last "@".
        let shown = url.split(separator: "@").last.map(String.init) ?? url
        description = "Redis address \(shown): \(problem)"
    }
}

extension String {
    fileprivate var removingPercentEscapes: String {
        var bytes: [UInt8] = []
        var iterator = utf8.makeIterator()
        while let byte = iterator.next() {
            guard byte == UInt8(ascii: "%") else {
                bytes.append(byte)
                continue
            }
            let hex = [iterator.next(), iterator.next()].compactMap { $0 }
            guard hex.count == 2, let value = UInt8(String(decoding: hex, as: UTF8.self), radix: 16) else {
                bytes.append(byte)
                bytes.append(contentsOf: hex)
                continue
            }
            bytes.append(value)
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
