import NIOCore
import NIOHTTP1
import SwitchboardNIO

/// NIO's typed upgrade step for one connection of a Hummingbird server: a WebSocket upgrade to the mount
/// path gets the hub's verdict (`Hub.admit`); on 101 the channel is handed to the hub (`Hub.adopt`). A
/// refusal is kept for `HubHTTP1Channel` to answer with its HTTP status, as is an upgrade to another path
/// (404).
struct HubUpgrader: NIOTypedHTTPServerProtocolUpgrader {
    typealias UpgradeResult = HubHTTP1Channel.UpgradeResult

    let hub: Hub
    let path: String
    /// This connection's verdict, between `buildUpgradeResponse` and `upgrade` (or the not-upgrading path).
    let verdict: NIOLoopBoundBox<UpgradeVerdict?>
    /// The socket, when the hub's own listener accepted the connection (`WebSocketServer(router:)`).
    let directSocket: DirectSocket?

    var supportedProtocol: String { "websocket" }
    /// The request's headers are checked by the hub (RFC 6455, with the reason in a 400).
    var requiredUpgradeHeaders: [String] { [] }

    func buildUpgradeResponse(
        channel: any Channel, upgradeRequest: HTTPRequestHead, initialResponseHeaders: HTTPHeaders
    ) -> EventLoopFuture<HTTPHeaders> {
        let verdict = self.verdict
        guard upgradeRequest.uri.utf8.prefix(while: { $0 != UInt8(ascii: "?") }).elementsEqual(path.utf8) else {
            // Hummingbird's HTTP/1.1 handling does not answer a request that asked to upgrade: answer it here.
            let refusal = UpgradeRefusal(
                status: .notFound, reason: "no WebSocket endpoint at this path", kind: .notFound)
            if case .refused(let counted) = hub.refused(refusal) { verdict.value = .refused(counted) }
            return channel.eventLoop.makeFailedFuture(refusal)
        }
        return hub.admit(upgradeRequest, remoteAddress: channel.remoteAddress, on: channel.eventLoop)
            .flatMapThrowing { answer in
                verdict.value = answer
                switch answer {
                case .admitted(let admission):
                    var headers = initialResponseHeaders
                    headers.add(contentsOf: admission.responseHeaders)
                    return headers
                case .refused(let refusal):
                    throw refusal
                }
            }
    }

    func upgrade(channel: any Channel, upgradeRequest: HTTPRequestHead) -> EventLoopFuture<UpgradeResult> {
        channel.eventLoop.makeCompletedFuture {
            guard case .admitted(let admission) = verdict.value else { throw AdoptionError.admissionUsed }
            verdict.value = nil
            do {
                try hub.adopt(channel, admission: admission, directSocket: directSocket)
            } catch {
                channel.close(promise: nil)
                throw error
            }
            return .upgraded
        }
    }
}
