import Crypto
import Foundation
import NIOCore
import NIOHTTP1
import SwitchboardCore
import SwitchboardNIO

/// The two stream transports on the channel layer, unchanged underneath: a one-way event stream is a
/// connection subscribed on the server's initiative to the channels it asked for (recovering from its
/// `Last-Event-ID`), and the HTTP transport is a connection whose commands arrive by `POST`.
extension ChannelsApplication {
    /// An event stream's request: its channels checked (names, namespaces, count, permissions) and its
    /// credentials decided as an upgrade's are (a bearer token in `Authorization` or `?token=`, the
    /// application's authenticator, the connect proxy), all before the 200. The HTTP transport's stream is
    /// decided as a WebSocket upgrade is: it authenticates with `connect`.
    public func shouldOpenStream(
        _ request: HTTPRequestHead, transport: Transport, from remoteAddress: SocketAddress?,
        on eventLoop: any EventLoop
    ) -> EventLoopFuture<UpgradeDecision> {
        guard transport == .eventStream else {
            return decideUpgrade(request, transport: transport, from: remoteAddress, on: eventLoop)
        }
        let parsed = EventStreamRequest.parse(
            request, limit: configuration.maxSubscriptionsPerConnection, options: options(for:))
        guard case .success(var stream) = parsed else {
            if case .failure(let refusal) = parsed {
                return eventLoop.makeSucceededFuture(.reject(refusal.status, reason: refusal.message))
            }
            return eventLoop.makeSucceededFuture(.reject(.badRequest, reason: "bad request"))
        }
        var head = request
        if let token = stream.token, Self.bearerToken(in: request.headers) == nil {
            head.headers.replaceOrAdd(name: "Authorization", value: "Bearer \(token)")
        }
        let trusted = loops?.hub.abuseLimits.trustedRanges ?? AddressRanges([])
        let isLocal = ClientAddress.isLocal(
            peer: remoteAddress?.ipAddress, forwardedFor: request.headers["X-Forwarded-For"],
            forwarded: request.headers["Forwarded"], trusted: trusted)
        let anonymousAllowed = self.anonymousAllowed
        let options = self.options(for:)
        return decideUpgrade(head, transport: transport, from: remoteAddress, on: eventLoop).map { decision in
            guard case .accept(let user, _, let info, let expiresAt, let attachment) = decision else { return decision }
            // No `connect` can follow on a one-way stream: it is authenticated now or never.
            guard user != nil || anonymousAllowed || attachment is TokenClaims else {
                return .reject(.unauthorized, reason: "authentication required: a token in Authorization or ?token=")
            }
            for channel in stream.channels {
                if let refusal = options(channel)?.permissions.refusal(
                    .subscribe, channel: channel, user: user, isSubscribed: false, isLocal: isLocal)
                {
                    return .reject(.forbidden, reason: "\(channel): \(refusal.message)")
                }
            }
            stream.inner = attachment
            return .accept(userID: user, subprotocol: nil, info: info, expiresAt: expiresAt, attachment: stream)
        }
    }

    /// Opens a one-way stream: authenticated by its request, subscribed (recovering) to its channels.
    func openEventStream(_ session: ClientSession, loop: ChannelsLoop) {
        guard let request = session.connection.attachment as? EventStreamRequest else {
            return session.connection.close(code: .policyViolation, reason: "no channels", reconnect: false)
        }
        session.eventStream = true
        let claims = session.connection.tokenClaims
        let grant = session.connection.upgradeContext?.grant
        // The channels and positions are taken: the connection keeps only the upgrade's own attachment.
        session.connection.attachment = request.inner
        ConnectionAuthentication(application: self).connected(
            session, expiresAt: claims?.expiresAt ?? grant?.expireAt, loop: loop)
        let subscriptions = SubscriptionLifecycle(application: self)
        for (channel, position) in zip(request.channels, request.positions) {
            subscriptions.subscribeOnServer(channel, recover: position, session: session, loop: loop)
        }
    }

    /// Opens the HTTP transport's session: its id (node, connection, a secret only this client has) goes
    /// down the stream first; then it authenticates as a WebSocket connection does.
    func openHTTPStream(_ session: ClientSession, loop: ChannelsLoop) {
        let secret = SymmetricKey(size: .bits128).withUnsafeBytes { Data($0) }.base64URLEncoded
        session.streamSecret = secret
        let id = StreamSessionID(node: nodeID, client: session.connection.id, secret: secret)
        session.reply(ServerMessage.session(id.description))
        ConnectionAuthentication(application: self).startAuthentication(session, loop: loop)
    }

    /// How this node names itself in session ids: its cluster id, or `local` alone.
    var nodeID: String { control?.nodeID ?? "local" }

    /// A `POST` of the HTTP transport: its commands go to the session's connection, here or (in a
    /// cluster) on the node the session id names, through the nodes' control channel.
    public func received(_ post: StreamPost, on eventLoop: any EventLoop) -> EventLoopFuture<StreamPostAnswer> {
        guard let id = StreamSessionID(post.session) else {
            return eventLoop.makeSucceededFuture(.error(.badRequest, code: 400, "malformed session id"))
        }
        guard post.body.contains(where: { !$0.isWhitespace }) else {
            return eventLoop.makeSucceededFuture(.error(.badRequest, code: 400, "no commands in the body"))
        }
        guard id.node == nodeID else {
            guard let control else {
                return eventLoop.makeSucceededFuture(.error(.notFound, code: 404, "unknown session"))
            }
            let command = NodeCommand.post(
                node: id.node, client: id.client.rawValue, secret: id.secret, body: post.body)
            let timeout = configuration.brokerTimeout
            // Only to a live node: a made-up node id must not send the body to every node.
            return control.nodes(on: eventLoop).hop(to: eventLoop).bounded(by: timeout)
                .flatMap { nodes -> EventLoopFuture<StreamPostAnswer> in
                    guard nodes.contains(where: { $0.id == id.node }) else {
                        return eventLoop.makeSucceededFuture(.error(.notFound, code: 404, "unknown session"))
                    }
                    return control.broadcast(command, on: eventLoop).hop(to: eventLoop).bounded(by: timeout)
                        .map { .accepted }
                }
                .recover { _ in .error(.serviceUnavailable, code: 503, "the session's node could not be reached") }
        }
        return deliver(post.body, to: id, on: eventLoop)
    }

    /// Hands the commands to the session's connection on its loop, as messages it received.
    func deliver(_ body: String, to id: StreamSessionID, on eventLoop: any EventLoop) -> EventLoopFuture<
        StreamPostAnswer
    > {
        guard let hub = loops?.hub, hub.loopShards.indices.contains(id.client.shard) else {
            return eventLoop.makeSucceededFuture(.error(.notFound, code: 404, "unknown session"))
        }
        let shard = hub.loopShards[id.client.shard]
        return shard.eventLoop.submit { () -> StreamPostAnswer in
            guard let connection = shard.connection(id.client), connection.transport == .httpStream,
                let session = connection.session, !session.isClosed, let secret = session.streamSecret
            else { return .error(.notFound, code: 404, "unknown session") }
            guard Self.sameSecret(secret, id.secret) else {
                return .error(.forbidden, code: 403, "the session belongs to another client")
            }
            // One command per line: split on "\n" only (JSON strings may hold other line separators raw).
            for line in body.utf8.split(separator: UInt8(ascii: "\n")) {
                let command = line.last == UInt8(ascii: "\r") ? line.dropLast() : line[...]
                guard command.contains(where: { $0 != 0x20 && $0 != 0x09 && $0 != 0x0D }) else { continue }
                guard connection.isOpen else { break }
                connection.receive(.text(ByteBuffer(bytes: command)))
            }
            return .accepted
        }
    }

    /// Compares in time independent of where they differ.
    static func sameSecret(_ lhs: String, _ rhs: String) -> Bool {
        let (left, right) = (Array(lhs.utf8), Array(rhs.utf8))
        guard left.count == right.count else { return false }
        return zip(left, right).reduce(UInt8(0)) { $0 | ($1.0 ^ $1.1) } == 0
    }
}

/// An HTTP transport session's id: `<node>.<connection>.<secret>`. The node and connection say where the
/// session lives; the secret, known only to the client its stream went to, proves the `POST` is its own.
struct StreamSessionID: CustomStringConvertible {
    let node: String
    let client: ConnectionID
    let secret: String

    init(node: String, client: ConnectionID, secret: String) {
        self.node = node
        self.client = client
        self.secret = secret
    }

    init?(_ text: String) {
        guard text.utf8.count <= 512 else { return nil }
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count >= 3, let raw = UInt64(parts[parts.count - 2]), !parts[parts.count - 1].isEmpty else {
            return nil
        }
        node = parts.dropLast(2).joined(separator: ".")
        client = ConnectionID(rawValue: raw)
        secret = String(parts[parts.count - 1])
        guard !node.isEmpty else { return nil }
    }

    var description: String { "\(node).\(client.rawValue).\(secret)" }
}

extension Data {
    /// Base64 with the URL-safe alphabet and no padding: fits a query parameter as it is.
    fileprivate var base64URLEncoded: String {
        base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }
}
