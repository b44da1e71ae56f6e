import Foundation
import NIOHTTP1
import SwitchboardNIO

extension ChannelsApplication {
    /// Demo mode, for development on one machine: the user (and presence info) named by `?user=` and
    /// `?info=`, unauthenticated. A request that a proxy forwarded (`X-Forwarded-For`, `Forwarded`) is refused
    /// with 403: a reverse proxy on this host connects from loopback for clients anywhere, who must not name
    /// themselves.
    public static let userFromQuery: Authenticator = { request in
        guard request.headers["X-Forwarded-For"].isEmpty, request.headers["Forwarded"].isEmpty else {
            return .reject(
                .forbidden, reason: "demo mode (?user=) serves only clients on this host; configure a token key")
        }
        return .accept(
            userID: queryParameter("user", in: request.uri), subprotocol: nil,
            info: queryParameter("info", in: request.uri).map(ServerMessage.quote))
    }

    private static func queryParameter(_ name: String, in uri: String) -> String? {
        guard let query = uri.split(separator: "?", maxSplits: 1).dropFirst().first else { return nil }
        for pair in query.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1)
            if parts.count == 2, parts[0] == name { return String(parts[1]).removingPercentEncoding }
        }
        return nil
    }
}
