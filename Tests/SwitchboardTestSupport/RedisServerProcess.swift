import Foundation
import NIOCore
import NIOPosix
import SwitchboardRedis

/// A real `redis-server` (Debian's) on a free loopback port, for the life of a test.
public final class RedisServerProcess: Sendable {
    public let port: Int
    private let process: Process

    private init(port: Int, process: Process) {
        self.port = port
        self.process = process
    }

    public static func start(_ extraArguments: [String] = [], port: Int? = nil) async throws -> RedisServerProcess {
        let port = try port ?? freePort()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/redis-server")
        process.arguments =
            ["--port", "\(port)", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--loglevel", "warning"]
            + extraArguments
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let server = RedisServerProcess(port: port, process: process)
        try await eventually(timeout: .seconds(20), "redis-server accepting") { await server.answersPing() }
        return server
    }

    /// `redis-server --sentinel` on a free port, watching the primary at `primaryPort` under `name`, quick to
    /// call it down (`downAfter`) and to fail over.
    public static func startSentinel(
        monitoring primaryPort: Int, name: String = "primary", downAfter: TimeAmount = .milliseconds(500)
    ) async throws -> RedisServerProcess {
        let port = try freePort()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("sentinel-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let file = directory.appendingPathComponent("sentinel.conf")
        let milliseconds = downAfter.nanoseconds / 1_000_000
        try """
        port \(port)
        bind 127.0.0.1
        dir \(directory.path)
        sentinel monitor \(name) 127.0.0.1 \(primaryPort) 1
        sentinel down-after-milliseconds \(name) \(milliseconds)
        sentinel failover-timeout \(name) 3000
        sentinel parallel-syncs \(name) 1

        """.write(to: file, atomically: true, encoding: .utf8)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/redis-server")
        process.arguments = [file.path, "--sentinel", "--loglevel", "warning"]
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let sentinel = RedisServerProcess(port: port, process: process)
        try await eventually(timeout: .seconds(20), "redis sentinel accepting") { await sentinel.answersPing() }
        return sentinel
    }

    public var configuration: RedisConfiguration { RedisConfiguration(host: "127.0.0.1", port: port) }

    /// Accepting TCP connections (whether it wants a password or not).
    private func answersPing() async -> Bool {
        guard
            let channel = try? await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connect(host: "127.0.0.1", port: port).get()
        else { return false }
        try? await channel.close()
        return true
    }

    public func signal(_ signal: Int32) { kill(process.processIdentifier, signal) }

    /// SIGKILL: a child of the test process may inherit a mask that blocks SIGTERM, and nothing of a test
    /// server's state matters. Foundation reaps it; `waitUntilExit` would spin a core while it does.
    public func stop() {
        kill(process.processIdentifier, SIGKILL)
    }

    /// SIGKILL, then waits until the process is gone, so another server may take its port.
    public func stopAndWait() async throws {
        stop()
        try await eventually(timeout: .seconds(10), "redis-server gone") { !process.isRunning }
    }

    public static func freePort() throws -> Int {
        let channel = try ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .bind(host: "127.0.0.1", port: 0).wait()
        defer { try? channel.close().wait() }
        return channel.localAddress?.port ?? 0
    }
}
