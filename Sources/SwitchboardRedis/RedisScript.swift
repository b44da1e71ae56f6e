import Crypto

/// A Lua script run by its SHA1 (`EVALSHA`), so each call sends 40 bytes instead of the source; the
/// source goes only when the server answers `NOSCRIPT`.
public struct RedisScript: Sendable {
    public let source: String
    public let sha: String

    public init(_ source: String) {
        self.source = source
        self.sha = Insecure.SHA1.hash(data: Array(source.utf8)).map { byte in
            let hex = String(byte, radix: 16)
            return byte < 16 ? "0" + hex : hex
        }.joined()
    }
}
