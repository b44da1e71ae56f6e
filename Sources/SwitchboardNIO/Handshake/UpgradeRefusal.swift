import NIOHTTP1

/// Why the hub refuses an upgrade, as the HTTP answer the client gets: whichever server received the
/// request (ours, or an embedding Hummingbird or NIO server) answers with `status`, `headers` and `reason`
/// as a plain-text body, then closes the connection.
public struct UpgradeRefusal: Error, Sendable, Equatable {
    /// 400 for a malformed upgrade, 401/403 for the application's refusals, 429 and 503 for limits.
    public var status: HTTPResponseStatus
    /// Sent as the body, for people reading logs and browser consoles.
    public var reason: String
    /// The metrics label this refusal is counted under.
    public var kind: SwitchboardMetrics.HandshakeRejection
    /// Headers the answer must carry besides the body's (a jittered `Retry-After`, say).
    public var extraHeaders: [(String, String)] = []

    /// A refusal of the given status and reason, counted under `kind`.
    public init(
        status: HTTPResponseStatus, reason: String, kind: SwitchboardMetrics.HandshakeRejection,
        extraHeaders: [(String, String)] = []
    ) {
        self.status = status
        self.reason = reason
        self.kind = kind
        self.extraHeaders = extraHeaders
    }

    /// Two refusals are the same answer when status and reason are; headers are jittered.
    public static func == (lhs: UpgradeRefusal, rhs: UpgradeRefusal) -> Bool {
        lhs.status == rhs.status && lhs.reason == rhs.reason
    }

    static func bad(_ reason: String) -> UpgradeRefusal {
        .init(status: .badRequest, reason: reason, kind: .badRequest)
    }

    /// The whole answer as headers (with `Content-Length` and `Connection: close`) and body bytes.
    public var response: (head: HTTPResponseHead, body: String) { response(json: false) }

    /// The answer, as plain text or (for streams, whose clients are scripts) as the protocol's JSON error
    /// object: `{"error":{"code":<status>,"message":<reason>}}`.
    public func response(json: Bool) -> (head: HTTPResponseHead, body: String) {
        let body =
            json
            ? #"{"error":{"code":\#(status.code),"message":\#(JSONText.quote(reason))}}"# + "\n" : reason + "\n"
        var headers = HTTPHeaders([
            ("Content-Type", json ? "application/json" : "text/plain; charset=utf-8"),
            ("Content-Length", "\(body.utf8.count)"), ("Connection", "close"),
        ])
        headers.add(contentsOf: extraHeaders)
        return (HTTPResponseHead(version: .http1_1, status: status, headers: headers), body)
    }
}
