import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL

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
    /// The NIO channel; its event loop is where this connection's futures complete.
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

    /// Whether the TCP connection is still open; a closed connection is not reopened.
    public var isActive: Bool { channel.isActive }

    /// Closes the TCP connection; commands still waiting for a reply fail with `.replyLost`.
    public func close() async {
        try? await channel.close()
    }
}
