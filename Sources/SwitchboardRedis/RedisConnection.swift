import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL

/// Where a Redis server is and how to talk to it.
public struct RedisConfiguration: Sendable {
    public var host = "127.0.0.1"
    public var port = 6379
    public var username: String?
    public var password: String?
    public var database = 0
    /// A command without a reply after this long fails with `.timeout`, and the connection is closed
    /// (its replies can no longer be matched to commands).
    public var commandTimeout = TimeAmount.seconds(5)
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
        if let at = rest.lastIndex(of: "@") {
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

    /// `redis+sentinel://[[user]:password@]sentinel[:port][,sentinel[:port]…]/primary-name[/db]`: the
    /// credentials and database are the data nodes'; sentinels listen on 26379 unless a port is given.
    private mutating func readSentinelAddress(_ url: String, rest: Substring) throws {
        var rest = rest
        if let at = rest.lastIndex(of: "@") {
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
    public var sentinels: [(host: String, port: Int)]
    public var primaryName: String

    public init(sentinels: [(host: String, port: Int)], primaryName: String) {
        self.sentinels = sentinels
        self.primaryName = primaryName
    }
}

/// A Redis address that cannot be used.
public struct RedisAddressError: Error, CustomStringConvertible {
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

extension ClientBootstrap {
    /// TCP keepalive probes after 10 s idle, every 5 s, 3 unanswered: a dead path is reset by the kernel
    /// within about 25 s even on connections that send nothing (the PINGs catch it sooner where they run).
    fileprivate func keepaliveTiming() -> ClientBootstrap {
        #if os(Linux)
            return
                self
                .channelOption(ChannelOptions.socket(SocketOptionLevel(IPPROTO_TCP), TCP_KEEPIDLE), value: 10)
                .channelOption(ChannelOptions.socket(SocketOptionLevel(IPPROTO_TCP), TCP_KEEPINTVL), value: 5)
                .channelOption(ChannelOptions.socket(SocketOptionLevel(IPPROTO_TCP), TCP_KEEPCNT), value: 3)
        #else
            return self
        #endif
    }
}

extension String {
    /// SNI takes names only: an address literal is sent without it.
    fileprivate var isIPAddress: Bool { (try? SocketAddress(ipAddress: self, port: 0)) != nil }
}

/// Why a command failed.
public enum RedisError: Error, Sendable, Equatable {
    /// The server answered with an error (`-ERR …`); the connection is fine.
    case server(String)
    /// The connection was down: the command was not sent (safe to retry).
    case connectionLost
    /// The connection broke after the command was sent and before its reply: it may have run.
    case replyLost
    /// No reply within `commandTimeout`: the command may still run. The connection stays for the commands
    /// behind it; it is closed if the reply has not come within twice the timeout (a stuck or dead link).
    case timeout
    /// The server sent something that is not RESP; the connection has been closed.
    case protocolViolation(String)
    /// No sentinel knew the primary, or the server found is not (or no longer) a primary.
    case notPrimary
}

/// One connection to Redis: commands are pipelined (sent without waiting) and their replies matched in
/// order. Speaks RESP3 after `HELLO 3`, RESP2 with servers that do not know HELLO. Pushes (RESP3 pub/sub
/// messages) go to `onPush`.
public final class RedisConnection: Sendable {
    public let channel: any Channel
    /// 3 after a successful `HELLO 3`, else 2.
    public let protocolVersion: Int
    /// The `run_id` of the Redis process at the other end (INFO server): it changes on every restart, and a
    /// promoted replica has its own. Data stamped with another one may have been rolled back (a restart from
    /// an older snapshot, a replica that was behind). Empty when the server does not say (INFO renamed).
    public let serverRunID: String
    private let handler: NIOLoopBound<RedisHandler>

    private init(
        channel: any Channel, handler: NIOLoopBound<RedisHandler>, protocolVersion: Int, serverRunID: String = ""
    ) {
        self.channel = channel
        self.handler = handler
        self.protocolVersion = protocolVersion
        self.serverRunID = serverRunID
    }

    /// Connects, negotiates the protocol, authenticates and selects the database.
    /// With Sentinel, the primary is asked of the sentinels first (the first that knows it answers), and
    /// the server must say it is a primary (`ROLE`): a sentinel's stale answer, or a primary demoted while
    /// we connected, is refused and the caller retries.
    public static func connect(
        _ configuration: RedisConfiguration, on eventLoop: any EventLoop,
        onPush: @escaping @Sendable (RESPValue) -> Void = { _ in }
    ) async throws -> RedisConnection {
        guard let sentinel = configuration.sentinel else {
            return try await connectDirectly(configuration, on: eventLoop, onPush: onPush)
        }
        // Each sentinel in turn: one that is behind may name a demoted primary, and the next knows better.
        for address in sentinel.sentinels {
            guard
                let (host, port) = await Self.primary(
                    asking: address, for: sentinel.primaryName, configuration: configuration, on: eventLoop)
            else { continue }
            var primary = configuration
            primary.sentinel = nil
            (primary.host, primary.port) = (host, port)
            guard let connection = try? await connectDirectly(primary, on: eventLoop, onPush: onPush) else { continue }
            let role = try? await connection.send(["ROLE"])
            if role?.elements?.first?.string == "master" { return connection }
            await connection.close()
        }
        throw RedisError.notPrimary
    }

    /// Where one sentinel says the primary is; nil when it cannot be asked or does not know.
    private static func primary(
        asking address: (host: String, port: Int), for name: String, configuration: RedisConfiguration,
        on eventLoop: any EventLoop
    ) async -> (String, Int)? {
        do {
            var asked = RedisConfiguration(host: address.host, port: address.port)
            asked.commandTimeout = configuration.commandTimeout
            asked.connectTimeout = configuration.connectTimeout
            let connection = try await connectDirectly(asked, on: eventLoop)
            let reply = try? await connection.send(["SENTINEL", "get-master-addr-by-name", .string(name)])
            await connection.close()
            guard let parts = reply?.elements, parts.count == 2, let host = parts[0].string,
                let port = parts[1].int.map(Int.init)
            else { return nil }
            return (host, port)
        } catch {
            return nil
        }
    }

    private static func connectDirectly(
        _ configuration: RedisConfiguration, on eventLoop: any EventLoop,
        onPush: @escaping @Sendable (RESPValue) -> Void = { _ in }
    ) async throws -> RedisConnection {
        let timeout = configuration.commandTimeout
        let channel = try await ClientBootstrap(group: eventLoop)
            .connectTimeout(configuration.connectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelOption(.socketOption(.so_keepalive), value: 1)
            .keepaliveTiming()
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls = configuration.tls {
                        let context = try NIOSSLContext(configuration: tls)
                        let name = configuration.host.isIPAddress ? nil : configuration.host
                        try channel.pipeline.syncOperations.addHandler(
                            NIOSSLClientHandler(context: context, serverHostname: name))
                    }
                    try channel.pipeline.syncOperations.addHandler(RedisHandler(timeout: timeout, onPush: onPush))
                }
            }
            .connect(host: configuration.host, port: configuration.port).get()
        let handler = try await channel.eventLoop.submit {
            NIOLoopBound(
                try channel.pipeline.syncOperations.handler(type: RedisHandler.self), eventLoop: channel.eventLoop)
        }.get()
        let raw = RedisConnection(channel: channel, handler: handler, protocolVersion: 3)
        do {
            var hello: [RESPArgument] = ["HELLO", "3"]
            if let password = configuration.password {
                hello += ["AUTH", .string(configuration.username ?? "default"), .string(password)]
            }
            var version = 3
            do {
                _ = try await raw.send(hello)
            } catch RedisError.server(let message)
                where message.contains("unknown command") || message.hasPrefix("NOPROTO")
            {
                // An older server, or one with HELLO disabled: RESP2, and AUTH on its own.
                version = 2
                if let password = configuration.password {
                    var auth: [RESPArgument] = ["AUTH"]
                    if let username = configuration.username { auth.append(.string(username)) }
                    _ = try await raw.send(auth + [.string(password)])
                }
            }
            if configuration.database != 0 { _ = try await raw.send(["SELECT", RESPArgument(configuration.database)]) }
            // Without it (INFO refused by an ACL) a rollback cannot be told from a restart: streams keep
            // their epochs then, as before this check existed.
            let info = (try? await raw.send(["INFO", "server"]))?.string ?? ""
            let runID =
                info.split(whereSeparator: \.isNewline).first { $0.hasPrefix("run_id:") }
                .map { String($0.dropFirst("run_id:".count)).trimmingCharacters(in: .whitespaces) } ?? ""
            return RedisConnection(channel: channel, handler: handler, protocolVersion: version, serverRunID: runID)
        } catch {
            try? await channel.close()
            throw error
        }
    }

    /// Sends one command; completes with its reply, or fails with a `RedisError`.
    public func send(_ arguments: [RESPArgument]) async throws -> RESPValue {
        try await sendFuture(arguments).get()
    }

    /// `send` for callers on event loops: completes on this connection's loop.
    public func sendFuture(_ arguments: [RESPArgument]) -> EventLoopFuture<RESPValue> {
        let promise = channel.eventLoop.makePromise(of: RESPValue.self)
        let handler = self.handler
        channel.eventLoop.execute { handler.value.send(arguments, promise: promise) }
        return promise.futureResult
    }

    public var isActive: Bool { channel.isActive }

    public func close() async {
        try? await channel.close()
    }
}

/// Matches replies to commands in order; one per connection, on its loop.
final class RedisHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// A command waiting for its reply. (Un)subscribe commands are answered by one confirmation per channel
    /// (pushes in RESP3, arrays in RESP2), gathered into one array reply.
    private struct Pending {
        var id: UInt64
        var promise: EventLoopPromise<RESPValue>
        var timer: Scheduled<Void>
        var confirmations = 0
        var confirmed: [RESPValue] = []
        /// A PING on a subscribed RESP2 connection: a message arriving before its reply is not the reply.
        var isPing = false
    }

    private static let subscriptionCommands: Set<String> = [
        "SUBSCRIBE", "UNSUBSCRIBE", "PSUBSCRIBE", "PUNSUBSCRIBE", "SSUBSCRIBE", "SUNSUBSCRIBE",
    ]
    private static let confirmationKinds: Set<String> = [
        "subscribe", "unsubscribe", "psubscribe", "punsubscribe", "ssubscribe", "sunsubscribe",
    ]

    private var decoder = RESPDecoder()
    private var pending = CircularBuffer<Pending>()
    private var nextID: UInt64 = 0
    private var context: ChannelHandlerContext?
    private var input: ByteBuffer?
    private let timeout: TimeAmount
    private let onPush: @Sendable (RESPValue) -> Void

    init(timeout: TimeAmount, onPush: @escaping @Sendable (RESPValue) -> Void) {
        self.timeout = timeout
        self.onPush = onPush
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func send(_ arguments: [RESPArgument], promise: EventLoopPromise<RESPValue>) {
        guard let context, context.channel.isActive else { return promise.fail(RedisError.connectionLost) }
        var buffer = context.channel.allocator.buffer(capacity: 64)
        RESPEncoder.encode(arguments, into: &buffer)
        nextID &+= 1
        let id = nextID
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let timer = context.eventLoop.scheduleTask(in: timeout) { loopBound.value.0.timedOut(id) }
        var entry = Pending(id: id, promise: promise, timer: timer)
        if case .string(let name) = arguments.first, Self.subscriptionCommands.contains(name.uppercased()) {
            // Each named channel is confirmed; without names (unsubscribe from all) one confirmation is awaited.
            entry.confirmations = max(arguments.count - 1, 1)
        }
        if case .string(let name) = arguments.first, name.uppercased() == "PING" { entry.isPing = true }
        pending.append(entry)
        context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        if var buffered = input {
            input = nil
            buffered.writeBuffer(&bytes)
            bytes = buffered
        }
        do {
            while let value = try decoder.next(from: &bytes) { received(value) }
        } catch {
            failAll(RedisError.protocolViolation(error.description))
            context.close(promise: nil)
            return
        }
        if bytes.readableBytes > 0 {
            // Only the unfinished scalar is left (the decoder keeps finished elements): drop what was read.
            bytes.discardReadBytes()
            input = bytes
        }
    }

    private func received(_ value: RESPValue) {
        if var head = pending.first, head.confirmations > 0, let kind = value.elements?.first?.string,
            Self.confirmationKinds.contains(kind.lowercased())
        {
            head.confirmed.append(value)
            guard head.confirmed.count == head.confirmations else {
                pending[pending.startIndex] = head
                return
            }
            pending.removeFirst()
            head.timer.cancel()
            return head.promise.succeed(.array(head.confirmed))
        }
        if case .push = value { return onPush(value) }
        // RESP2: a message for a channel already subscribed, arriving while another (un)subscribe waits.
        if let head = pending.first, head.confirmations > 0 || head.isPing,
            let kind = value.elements?.first?.string, ["message", "pmessage", "smessage"].contains(kind)
        {
            return onPush(value)
        }
        guard let head = pending.popFirst() else {
            // A RESP2 pub/sub message arrives as a plain array with no command waiting for it.
            return onPush(value)
        }
        head.timer.cancel()
        if case .error(let message) = value {
            head.promise.fail(RedisError.server(message))
            // A primary demoted to replica (a failover): this connection must find the new primary.
            if message.contains("READONLY") { context?.close(promise: nil) }
        } else {
            head.promise.succeed(value)
        }
    }

    /// Each command times out on its own: the one that is slow fails, and those behind it keep their own
    /// deadlines (one slow read must not fail a pipeline of publishes that ran). Its reply, when it comes,
    /// is matched and dropped. Still unanswered after a second timeout, the link is stuck or dead: closed.
    private func timedOut(_ id: UInt64) {
        guard let index = pending.firstIndex(where: { $0.id == id }), let context else { return }
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let promise = pending[index].promise
        pending[index].timer = context.eventLoop.scheduleTask(in: timeout) {
            let (handler, context) = loopBound.value
            guard handler.pending.contains(where: { $0.id == id }) else { return }
            // Closed first, so nothing a failure callback sends goes to the dead link.
            context.close(promise: nil)
            handler.failAll(RedisError.replyLost)
        }
        // Last: its callbacks run now and may send, fail or close (changing `pending`). A later completion
        // of the failed promise, when the reply comes, is ignored.
        promise.fail(RedisError.timeout)
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll(RedisError.replyLost)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    private func failAll(_ error: RedisError) {
        while let entry = pending.popFirst() {
            entry.timer.cancel()
            entry.promise.fail(error)
        }
    }
}
