import Crypto

/// A Lua script run by its SHA1 (`EVALSHA`), so each call sends 40 bytes instead of the source; the
/// source goes only when the server answers `NOSCRIPT`.
public struct RedisScript: Sendable {
    /// The Lua source, sent with `EVAL` only when the server does not know `sha`.
    public let source: String
    /// Lowercase hex SHA1 of `source`, as `EVALSHA` and `SCRIPT LOAD` name it.
    public let sha: String

    /// Computes the SHA1 once; make scripts once (as `static let`s) and reuse them.
    public init(_ source: String) {
        self.source = source
        self.sha = Insecure.SHA1.hash(data: Array(source.utf8)).map { byte in
            let hex = String(byte, radix: 16)
            return byte < 16 ? "0" + hex : hex
        }.joined()
    }
}
